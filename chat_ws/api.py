"""The public API of chat_ws: ask, send, forget, pending, cancel, handler, health, with sync twins.

Everything a site needs comes from here: the calls, the handler decorator and its context,
error replies, the exceptions, the ``answer_orphaned`` signal and read access to settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync

from chat_ws import delivery, presence, promises, sessions
from chat_ws import health as _health
from chat_ws.conf import setting
from chat_ws.dispatch import Context, handler
from chat_ws.exceptions import (
    AnswerTimeout,
    ChatWsError,
    ClientGone,
    QuestionCancelled,
    QuestionError,
    QuestionSuperseded,
    StoreLost,
    StoreUnavailable,
    TooManyPending,
)
from chat_ws.health import HealthReport
from chat_ws.protocol import E_BAD_FIELD, error_reply
from chat_ws.signals import answer_orphaned
from chat_ws.store import Connection, get_store
from chat_ws.types import Answer, Message, OnDisconnect, Question

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = [
    "E_BAD_FIELD",
    "Answer",
    "AnswerTimeout",
    "ChatWsError",
    "ClientGone",
    "Connection",
    "Context",
    "HealthReport",
    "Message",
    "Question",
    "QuestionCancelled",
    "QuestionError",
    "QuestionSuperseded",
    "StoreLost",
    "StoreUnavailable",
    "TooManyPending",
    "answer_orphaned",
    "error_reply",
    "setting",
    "ask",
    "ask_sync",
    "cancel",
    "cancel_sync",
    "connections",
    "end_conversation",
    "end_conversation_sync",
    "forget",
    "forget_sync",
    "handler",
    "health",
    "health_sync",
    "is_operator",
    "local_client_ids",
    "open_sessions",
    "pending",
    "pending_sync",
    "send",
    "send_sync",
]


async def ask(
    client_id: str,
    message: Message,
    *,
    conversation: str = "default",
    timeout: float | None = None,
    on_disconnect: OnDisconnect = "hold",
    meta: dict[str, Any] | None = None,
    step: str | None = None,
) -> Answer:
    """Ask client_id a question and wait for the answer.

    ``message`` is a server message such as ``{"dispatch-key": "iviewr-says", "text": "..."}``;
    it is sent with a fresh ``p-key``. ``timeout`` defaults to the ``QUESTION_TIMEOUT`` setting.
    With ``on_disconnect="hold"`` the question survives a dropped connection for
    ``RECONNECT_GRACE`` seconds and is re-sent on reconnection; ``"fail"`` fails it at once.
    ``meta`` (JSON data) is kept with the question, for the admin and for receivers of
    ``chat_ws.signals.answer_orphaned`` when the asker died before the answer arrived.

    ``step`` names the question within the conversation (unique there, e.g. "q3") and makes it
    durable: the answer is journaled in the store by the same step that resolves it, and any
    later ask() of the same step in the conversation returns that answer at once and sends
    nothing, so a conversation re-run from its start after a crash asks nothing twice. An ask()
    of a step still pending becomes its asker (the earlier asker raises QuestionSuperseded). The
    journaled answers are consumed by the next ask() in the conversation or end_conversation();
    one not consumed within ``ANSWER_CONSUME_TIMEOUT`` is sent to ``answer_orphaned`` again.

    Raises AnswerTimeout, ClientGone, QuestionCancelled (QuestionSuperseded), TooManyPending or
    StoreLost.
    """
    return await promises.ask(
        client_id,
        message,
        conversation=conversation,
        timeout=timeout,
        on_disconnect=on_disconnect,
        meta=meta,
        step=step,
    )


async def end_conversation(client_id: str, conversation: str, *, forget: bool = False) -> None:
    """The asker is done with the conversation: its journaled answers are consumed (nothing is
    handed to ``answer_orphaned`` any more). With ``forget`` the journal of the conversation is
    dropped as well, so that a new run asks every step afresh (a restart)."""
    await promises.end_conversation(client_id, conversation, forget=forget)


async def send(client_id: str, message: Message) -> None:
    """Send a message to client_id's socket, in whichever process serves it."""
    await delivery.deliver(client_id, message)


async def forget(client_id: str, reason: str = "forgotten") -> int:
    """Fail the client's questions with ClientGone, close its socket, drop its records.

    Returns how many pending questions were rejected.
    """
    return await presence.forget(client_id, reason)


async def pending(client_id: str | None = None, conversation: str | None = None) -> list[Question]:
    """Pending questions, oldest first, optionally of one client and/or conversation."""
    return await promises.pending(client_id, conversation)


async def cancel(p_key: str, reason: str = "cancelled") -> bool:
    """Cancel a pending question; its asker raises QuestionCancelled. False if it was gone."""
    return await promises.cancel(p_key, reason)


ask_sync = async_to_sync(ask)
send_sync = async_to_sync(send)
forget_sync = async_to_sync(forget)
pending_sync = async_to_sync(pending)
cancel_sync = async_to_sync(cancel)
end_conversation_sync = async_to_sync(end_conversation)


async def health() -> HealthReport:
    """Check the store and the channel layer and count clients and questions; never raises.

    ``report.healthy`` is the verdict; ``report.as_dict()`` is what the health endpoint serves.
    """
    return await _health.health()


health_sync = async_to_sync(health)


async def connections(client_id_prefix: str = "") -> list[Connection]:
    """Presence records (connected, or within the reconnect grace) of clients with the prefix."""
    records = await get_store().connections()
    return [record for record in records if record.client_id.startswith(client_id_prefix)]


def local_client_ids() -> list[str]:
    """The client-ids whose sockets this process serves."""
    return [endpoint.client_id for endpoint in delivery.endpoints()]


async def open_sessions(client_id_prefix: str = "") -> int:
    """How many ClientSession rows of clients with the prefix are not closed, queued rows written first."""
    await sessions.flush()
    return await sessions.count_open(client_id_prefix)


async def is_operator(request: HttpRequest) -> bool:
    """True for an active staff user, or a request with ``Authorization: Bearer <HEALTH_TOKEN>``."""
    from chat_ws.views import authorized

    return await authorized(request)
