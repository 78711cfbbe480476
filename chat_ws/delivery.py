"""Getting messages to a client's socket, in this process or in any other one."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from channels.layers import get_channel_layer

from chat_ws import protocol
from chat_ws.conf import setting
from chat_ws.exceptions import ConfigurationError, InvalidMessage, StoreUnavailable
from chat_ws.redis_policy import is_unreachable
from chat_ws.runtime import runtime
from chat_ws.store import get_store
from chat_ws.types import Message

logger = logging.getLogger(__name__)

DELIVER_EVENT = "chat.deliver"
CLOSE_EVENT = "chat.close"
ORPHANED_EVENT = "chat.orphaned"  # a journaled answer nobody consumed, for the socket's process


class Endpoint(Protocol):
    """What a local socket (a ChatConsumer) offers to delivery and presence."""

    client_id: str
    channel_name: str
    scope: dict[str, Any]
    session_closed: bool  # its ClientSession row was closed already (by a forget)
    is_closed: bool  # closing or closed: nothing more is sent
    closed_by_server: bool  # the server closed it (replaced, forgotten): its records are not its own
    close_reason: str | None  # why it closed, for the session row

    async def push(self, message: Message) -> None:
        """Encode and send one message down the socket."""
        ...

    async def shut(self, code: int, reason: str) -> None:
        """Close the socket with a close code, recording why."""
        ...

    async def restart(self) -> None:
        """Close the socket because this process stops (1012, or 4012); return once the close is
        recorded as an ordinary disconnect (its questions wait for the reconnect)."""
        ...


def register(endpoint: Endpoint) -> Endpoint | None:
    """Make endpoint the local socket of its client-id; return the one it displaced."""
    local_ = runtime().endpoints
    previous = local_.get(endpoint.client_id)
    local_[endpoint.client_id] = endpoint
    return previous if previous is not endpoint else None


def unregister(endpoint: Endpoint) -> bool:
    """Forget endpoint if it is still the local socket of its client-id."""
    local_ = runtime().endpoints
    if local_.get(endpoint.client_id) is endpoint:
        del local_[endpoint.client_id]
        return True
    return False


def local(client_id: str) -> Endpoint | None:
    """The socket of client_id in this process, if any."""
    return runtime().endpoints.get(client_id)


def endpoints() -> list[Endpoint]:
    """The sockets this process serves."""
    return list(runtime().endpoints.values())


def local_count() -> int:
    """How many sockets this process serves."""
    return len(runtime().endpoints)


def layer() -> Any:
    """The configured channel layer; ConfigurationError when there is none."""
    found = get_channel_layer(setting("CHANNEL_LAYER"))
    if found is None:
        raise ConfigurationError("chat_ws needs a channel layer (CHANNEL_LAYERS)")
    return found


async def deliver(client_id: str, message: Message) -> None:
    """Send message to client_id's socket wherever it is; nothing happens when none is open.

    A socket in another process is reached through the channel its presence record names: the
    record is written in the same script that hands a reconnecting client its pending questions,
    so a question is either re-sent by that script or delivered to the channel it recorded.
    """
    protocol.validate(message)  # before anything leaves this process
    endpoint = runtime().endpoints.get(client_id)
    if endpoint is not None:
        await endpoint.push(message)
        return
    channel_name = await _open_channel(client_id)
    if channel_name is not None:
        await _layer_send(channel_name, {"type": DELIVER_EVENT, "message": message})


async def _open_channel(client_id: str) -> str | None:
    """The channel of client_id's open socket, from its presence record; None when it has none."""
    connection = await get_store().connection(client_id)
    return connection.channel_name if connection is not None and connection.is_open else None


async def _layer_send(channel_name: str, event: dict[str, Any]) -> None:
    try:
        await layer().send(channel_name, event)
    except TypeError as exc:  # the layer's serializer refused the payload
        raise InvalidMessage(f"message cannot cross the channel layer: {exc}") from exc
    except Exception as exc:
        if is_unreachable(exc):
            raise StoreUnavailable(f"channel layer unreachable: {exc}") from exc
        raise


async def hand_over(client_id: str, entry_json: str) -> bool:
    """Give a journaled answer nobody consumed to the process serving client_id's socket (its
    consumer sends answer_orphaned there); False when the client has no open socket."""
    endpoint = runtime().endpoints.get(client_id)
    if endpoint is not None:
        from chat_ws import promises  # promises imports this module

        await promises.orphaned(entry_json)
        return True
    channel_name = await _open_channel(client_id)
    if channel_name is None:
        return False
    await _layer_send(channel_name, {"type": ORPHANED_EVENT, "entry": entry_json})
    return True


def detach(client_id: str) -> Endpoint | None:
    """Stop delivering to client_id's local socket (it is about to close); return it."""
    return runtime().endpoints.pop(client_id, None)


async def close(
    client_id: str, code: int, reason: str, endpoint: Endpoint | None = None, channel_name: str | None = None
) -> None:
    """Close client_id's socket wherever it is: endpoint (the local socket, already detached), else
    the socket of channel_name (what the presence record named when it was removed); with
    neither, it has no open socket."""
    endpoint = endpoint or runtime().endpoints.pop(client_id, None)
    if endpoint is not None:
        await endpoint.shut(code, reason)
    elif channel_name is not None:
        await close_channel(channel_name, code, reason)


async def close_channel(channel_name: str, code: int, reason: str) -> None:
    """Close the socket served by one channel name (an older connection of a client-id)."""
    for endpoint in list(runtime().endpoints.values()):
        if endpoint.channel_name == channel_name:
            await endpoint.shut(code, reason)
            return
    await _layer_send(channel_name, {"type": CLOSE_EVENT, "code": code, "reason": reason})
