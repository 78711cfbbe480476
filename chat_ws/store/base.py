"""The store interface: pending questions, presence records and settlement notices."""

from __future__ import annotations

import secrets
import zlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chat_ws.types import JournalEntry, Message, Question

P_KEY_PREFIX = "promise-"

SettlementCallback = Callable[[dict[str, Any]], Awaitable[None] | None]


@dataclass
class Connection:
    """Presence record of one client-id."""

    client_id: str
    server_id: str
    channel_name: str
    connected_at: float
    last_seen: float
    closed_at: float | None = None  # set while the client is disconnected (grace period)
    alive_sent_at: float | None = None  # when the sweep last sent alive?

    @property
    def is_open(self) -> bool:
        """True while a socket serves this client-id."""
        return self.closed_at is None


class BaseStore(ABC):
    """Questions and presence shared by every process that uses the same backend.

    Every multi-record change is atomic. Times are unix seconds passed in by the caller so
    that services and tests control the clock.
    """

    answers_as_json = False  # True: resolve() writes answers as JSON text (give it answer_json)

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf

    # ------------------------------------------------------------------ questions
    @abstractmethod
    async def ask_question(
        self, question: Question, *, max_pending: int
    ) -> tuple[str, Question | JournalEntry | None]:
        """Store a question, giving it its seq, only for a known client, in one atomic step.

        Returns the client's presence state ("open", "closed" or "none") and the stored question,
        or None when the client is unknown, or disconnected and the question is fail-fast.
        Raises TooManyPending past max_pending. Storing it consumes the client's journaled
        answers in the same conversation.

        A step question whose step is journaled already returns ("answered", its entry); one
        whose step is still pending returns ("pending", the pending question) and stores nothing.
        """

    @abstractmethod
    async def resolve(
        self,
        client_id: str,
        p_keys: list[str],
        answer: Message | None = None,
        now: float = 0.0,
        *,
        answer_json: str | None = None,
    ) -> Question | None:
        """Remove and return the most recent question of client_id whose key is in p_keys; a
        step question's answer is journaled in the same step (answered at ``now``), unconsumed.
        ``answer_json``: the answer already encoded (chat_ws.codec.JSON), when the caller has it."""

    @abstractmethod
    async def take_over(self, question: Question) -> bool:
        """Make question's record (the same p-key, a new server_id) the stored one, if it is still
        pending; False when it was settled meanwhile."""

    @abstractmethod
    async def consume(self, client_id: str, conversation: str, *, forget: bool = False) -> None:
        """Mark the conversation's journaled answers consumed; with forget, drop its journal."""

    @abstractmethod
    async def journal(self, client_id: str) -> dict[str, JournalEntry | str]:
        """The client's journal: field -> entry once answered, or the p-key while asked."""

    @abstractmethod
    async def unconsumed_answers(self, before: float, now: float, limit: int = 1000) -> list[JournalEntry]:
        """Claim journaled answers answered (or last handed over) before ``before`` and not yet
        consumed: each is stamped ``now`` and returned, so that it is handed over again only after
        another wait, and by one caller."""

    @abstractmethod
    async def take(
        self, p_key: str, client_id: str | None = None, *, asker: Question | None = None
    ) -> Question | None:
        """Remove and return one question (of client_id, when given), or None when it is gone.
        With ``asker``, only while the record names that asker (``Question.held_by``): an asker
        that was taken over does not withdraw the question its successor waits on."""

    @abstractmethod
    async def take_client(self, client_id: str, *, only_fail_fast: bool = False) -> list[Question]:
        """Remove and return the client's questions (only on_disconnect="fail" ones if asked)."""

    @abstractmethod
    async def get_question(self, p_key: str, client_id: str | None = None) -> Question | None:
        """Return one question (of client_id, when given) without removing it."""

    @abstractmethod
    async def client_questions(self, client_id: str) -> list[Question]:
        """The client's pending questions, oldest first."""

    @abstractmethod
    async def pending(
        self, client_id: str | None = None, conversation: str | None = None
    ) -> list[Question]:
        """Pending questions, oldest first, optionally of one client and/or conversation."""

    @abstractmethod
    async def expired_questions(self, now: float, limit: int = 1000) -> list[Question]:
        """Remove and return questions whose expiry time has passed."""

    # ------------------------------------------------------------------ presence
    @abstractmethod
    async def open_connection(
        self, client_id: str, server_id: str, channel_name: str, now: float
    ) -> Connection | None:
        """Record that channel_name now serves client_id; return the record it replaced."""

    async def connect_client(
        self, client_id: str, server_id: str, channel_name: str, now: float
    ) -> tuple[Connection | None, list[Question]]:
        """open_connection() and the client's pending questions (oldest first), for the re-send
        on connect; a backend may do both in one step."""
        previous = await self.open_connection(client_id, server_id, channel_name, now)
        return previous, await self.client_questions(client_id)

    @abstractmethod
    async def close_connection(self, client_id: str, channel_name: str, now: float) -> bool:
        """Mark the client disconnected if channel_name still serves it; True when it did."""

    @abstractmethod
    async def touch(self, client_id: str, now: float) -> bool:
        """Record that the client was heard from; clears a pending alive? check."""

    @abstractmethod
    async def mark_alive_sent(self, client_id: str, now: float) -> None:
        """Record that an alive? check was sent."""

    @abstractmethod
    async def connection(self, client_id: str) -> Connection | None:
        """The client's presence record, open or within its grace period."""

    @abstractmethod
    async def connections(self) -> list[Connection]:
        """Every presence record."""

    @abstractmethod
    async def silent_since(self, before: float, limit: int = 1000) -> list[str]:
        """Open clients last heard from before the given time (indexed, not a scan)."""

    @abstractmethod
    async def closed_since(self, before: float, limit: int = 1000) -> list[str]:
        """Disconnected clients whose connection closed before the given time."""

    @abstractmethod
    async def forget_client(
        self, client_id: str, claims: Sequence[str] = (), *, only_if_absent: bool = False
    ) -> tuple[list[Question], str | None] | None:
        """Atomically remove the client's questions, presence records and the named claims;
        return the questions and the channel of its open socket (None when it had none).

        With ``only_if_absent`` (after an eviction) nothing happens, and None is returned, when
        the client has a presence record again: it reconnected in the meantime.
        """

    # ------------------------------------------------------------------ coordination
    @abstractmethod
    async def acquire_lock(self, name: str, owner: str, ttl: float) -> bool:
        """Take a named lock for ttl seconds unless someone else holds it."""

    @abstractmethod
    async def release_lock(self, name: str, owner: str) -> None:
        """Release a lock held by owner."""

    @abstractmethod
    async def claim(self, name: str, owner: str, ttl: float, *, client_id: str | None = None) -> str:
        """Bind name to owner unless it is bound already (refreshing the TTL); return its owner.

        A claim made for a client (``client_id``) is kept beside the client's records, where
        forget_client(client_id, claims=[name]) removes it in the same step.
        """

    @abstractmethod
    async def admit_socket(self, name: str, member: str, *, limit: int, now: float, max_age: float) -> bool:
        """Count member among name's open sockets unless limit are open; False when refused."""

    @abstractmethod
    async def release_socket(self, name: str, member: str) -> None:
        """Stop counting member among name's open sockets."""

    @abstractmethod
    async def set_value(self, name: str, value: str, ttl: float | None) -> None:
        """Store a small named value (last sweep time, heartbeats)."""

    @abstractmethod
    async def get_value(self, name: str) -> str | None:
        """Read a small named value."""

    @abstractmethod
    async def publish(self, server_id: str, event: dict[str, Any]) -> int:
        """Deliver a settlement notice to the process named server_id; return how many listened."""

    @abstractmethod
    async def subscribe(self, server_id: str, callback: SettlementCallback) -> None:
        """Start delivering this process's settlement notices to callback (idempotent)."""

    @abstractmethod
    async def check(self) -> bool:
        """True when the backend answers; False when only some of its servers do (a cluster
        with a master down: the clients whose keys live on the others are served); raises
        StoreUnavailable when none does."""

    async def nodes(self) -> list[NodeStats]:
        """Per server the backend spans: keys held and commands served (empty in memory)."""
        return []

    async def close(self) -> None:
        """Release connections held by this store."""

    # ------------------------------------------------------------------ sweep and health
    @abstractmethod
    async def get_connections(self, client_ids: list[str]) -> list[Connection]:
        """Presence records of several clients at once; missing ones are left out."""

    @abstractmethod
    async def evict(
        self, client_id: str, *, alive_sent_at: float | None = None, closed_at: float | None = None
    ) -> bool:
        """Drop the client's presence record only if it is still in the state the caller saw.

        With ``alive_sent_at``: still open and marked at that time; with ``closed_at``: still
        disconnected since that time. True when this call dropped it: of two sweeps, one wins.
        """

    @abstractmethod
    async def seen_since(self, after: float, limit: int = 1000) -> list[Connection]:
        """Records (open or in grace) last heard from after the given time, oldest first."""

    @abstractmethod
    async def count_expired(self, now: float) -> int:
        """How many questions have passed their expiry time; nothing is removed."""

    @abstractmethod
    async def orphaned_clients(self, limit: int = 1000) -> list[str]:
        """Client-ids that have pending questions but no presence record."""

    @abstractmethod
    async def take_orphaned(self, client_id: str) -> list[Question]:
        """Remove and return the client's questions if it has no presence record (atomic)."""

    @abstractmethod
    async def prune_indexes(self, *, remove: bool = True) -> int:
        """Count, and unless told not to remove, index members whose record expired."""

    @abstractmethod
    async def stats(self) -> StoreStats:
        """Counts for the health report."""

    @abstractmethod
    async def delete_value(self, name: str) -> None:
        """Remove a small named value."""


def client_hash(client_id: str) -> int:
    """A stable 32-bit hash (CRC-32) of a client-id: it places the client's Redis records and
    is carried by the client's p-keys."""
    return zlib.crc32(client_id.encode())


def new_p_key(client_id: str) -> str:
    """A fresh, unguessable promise key for one of client_id's questions: ``promise-`` + the
    client's hash (8 hex digits) + 96 random bits (24 hex digits)."""
    return f"{P_KEY_PREFIX}{client_hash(client_id):08x}{secrets.token_hex(12)}"


def p_key_hash(p_key: str) -> int | None:
    """The client hash a p-key made by new_p_key carries; None for any other string."""
    if len(p_key) != len(P_KEY_PREFIX) + 32 or not p_key.startswith(P_KEY_PREFIX):
        return None
    try:
        return int(p_key[len(P_KEY_PREFIX) : len(P_KEY_PREFIX) + 8], 16)
    except ValueError:
        return None


def question_to_json(question: Question) -> str:
    """Serialise a question record, without its seq, for a backend that stores text."""
    from chat_ws.codec import JSON

    return JSON.encode(
        {
            "p_key": question.p_key,
            "client_id": question.client_id,
            "conversation": question.conversation,
            "message": question.message,
            "asked_at": question.asked_at,
            "expires_at": question.expires_at,
            "on_disconnect": question.on_disconnect,
            "server_id": question.server_id,
            "extra": question.extra,
            "step": question.step,
            "asker": question.asker,
        }
    )


def question_from_json(text: str | bytes) -> Question:
    """Inverse of question_to_json."""
    import json

    data = json.loads(text)
    return Question(**data)


def record_json(question: Question) -> str:
    """The record of a stored question (its seq first), as the Redis scripts write it."""
    return '{"seq":%d,%s' % (question.seq, question_to_json(question)[1:])


def entry_to_json(entry: JournalEntry) -> str:
    """A journal entry as RESOLVE writes it (inverse of entry_from_json)."""
    from chat_ws.codec import JSON

    return '{"question":%s,"answer":%s,"answered_at":%r}' % (
        record_json(entry.question), JSON.encode(entry.answer), entry.answered_at
    )


def entry_from_json(text: str | bytes) -> JournalEntry:
    """A journal entry as RESOLVE writes it: question record, answer message, answered_at."""
    import json

    data = json.loads(text)
    return JournalEntry(Question(**data["question"]), data["answer"], float(data["answered_at"]))


@dataclass
class StoreStats:
    """What a store holds right now, for the health report."""

    open_connections: int  # presence records of connected clients
    closed_connections: int  # presence records of clients within their reconnect grace
    questions: int  # pending questions
    oldest_asked_at: float | None  # unix seconds of the oldest pending question


@dataclass
class NodeStats:
    """One Redis server (a cluster master) as the health report shows it."""

    node: str  # host:port
    keys: int | None  # keys it holds (all of them, not only chat_ws's); None when it did not answer
    commands: int | None  # commands it has processed since it started; None when it did not answer
    error: str | None = None  # why it did not answer
