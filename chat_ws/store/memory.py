"""In-memory store: one process, the same behaviour as the Redis store."""

from __future__ import annotations

import copy
import inspect
import itertools
import logging
import time
from collections.abc import Sequence
from typing import Any

from chat_ws.exceptions import TooManyPending
from chat_ws.store.base import BaseStore, Connection, SettlementCallback, StoreStats
from chat_ws.types import JOURNAL_SEPARATOR, JournalEntry, Message, Question

logger = logging.getLogger(__name__)


class MemoryStore(BaseStore):
    """Keeps everything in dicts of this process; nothing is shared with other processes."""

    def __init__(self, conf: dict[str, Any]) -> None:
        super().__init__(conf)
        self._questions: dict[str, Question] = {}
        self._by_client: dict[str, dict[str, int]] = {}
        self._connections: dict[str, Connection] = {}
        self._values: dict[str, tuple[str, float | None]] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._sockets: dict[str, dict[str, float]] = {}
        self._seq = itertools.count(1)
        self._callbacks: dict[str, SettlementCallback] = {}
        self._journals: dict[str, dict[str, JournalEntry | str]] = {}  # client -> field -> entry/p-key
        self._unconsumed: dict[tuple[str, str], float] = {}  # (client, field) -> answered/handed at

    # ------------------------------------------------------------------ questions
    def _remove(self, p_key: str) -> Question | None:
        question = self._questions.pop(p_key, None)
        if question is not None:
            keys = self._by_client.get(question.client_id)
            if keys is not None:
                keys.pop(p_key, None)
                if not keys:
                    del self._by_client[question.client_id]
        return question

    async def ask_question(
        self, question: Question, *, max_pending: int
    ) -> tuple[str, Question | JournalEntry | None]:
        field = question.journal_field
        journal = self._journals.get(question.client_id, {})
        if field is not None and field in journal:
            entry = journal[field]
            if isinstance(entry, JournalEntry):
                return "answered", copy.deepcopy(entry)
            if entry in self._questions:
                return "pending", copy.copy(self._questions[entry])
        record = self._connections.get(question.client_id)
        state = "none" if record is None else ("open" if record.closed_at is None else "closed")
        if state == "none" or (state == "closed" and question.on_disconnect == "fail"):
            return state, None
        keys = self._by_client.setdefault(question.client_id, {})
        if len(keys) >= max_pending:
            if not keys:
                del self._by_client[question.client_id]
            raise TooManyPending(
                f"client already has {max_pending} pending questions",
                p_key=question.p_key,
                client_id=question.client_id,
            )
        self._consume(question.client_id, question.conversation)
        stored = copy.copy(question)
        stored.seq = next(self._seq)
        self._questions[stored.p_key] = stored
        keys[stored.p_key] = stored.seq
        if field is not None:
            self._journals.setdefault(question.client_id, {})[field] = stored.p_key
        return state, copy.copy(stored)

    def _consume(self, client_id: str, conversation: str) -> None:
        prefix = conversation + JOURNAL_SEPARATOR
        for key in [k for k in self._unconsumed if k[0] == client_id and k[1].startswith(prefix)]:
            del self._unconsumed[key]

    async def resolve(
        self,
        client_id: str,
        p_keys: list[str],
        answer: Message | None = None,
        now: float = 0.0,
        *,
        answer_json: str | None = None,
    ) -> Question | None:
        keys = self._by_client.get(client_id)
        if not keys:
            return None
        wanted = set(p_keys)
        best = max((k for k in keys if k in wanted), key=keys.__getitem__, default=None)
        question = None if best is None else self._remove(best)
        field = question.journal_field if question is not None else None
        if question is not None and field is not None:
            entry = JournalEntry(copy.copy(question), copy.deepcopy(answer or {}), now)
            self._journals.setdefault(client_id, {})[field] = entry
            self._unconsumed[(client_id, field)] = now
        return question

    async def take_over(self, question: Question) -> bool:
        if question.p_key not in self._questions:
            return False
        self._questions[question.p_key] = copy.copy(question)
        return True

    async def consume(self, client_id: str, conversation: str, *, forget: bool = False) -> None:
        self._consume(client_id, conversation)
        if forget:
            prefix = conversation + JOURNAL_SEPARATOR
            journal = self._journals.get(client_id, {})
            for field in [f for f in journal if f.startswith(prefix)]:
                del journal[field]

    async def journal(self, client_id: str) -> dict[str, JournalEntry | str]:
        return copy.deepcopy(self._journals.get(client_id, {}))

    async def unconsumed_answers(self, before: float, now: float, limit: int = 1000) -> list[JournalEntry]:
        out: list[JournalEntry] = []
        for key, at in sorted(self._unconsumed.items(), key=lambda item: item[1]):
            if len(out) >= limit or at >= before:
                break
            entry = self._journals.get(key[0], {}).get(key[1])
            if not isinstance(entry, JournalEntry):
                del self._unconsumed[key]
                continue
            self._unconsumed[key] = now
            out.append(copy.deepcopy(entry))
        return out

    async def take(
        self, p_key: str, client_id: str | None = None, *, asker: Question | None = None
    ) -> Question | None:
        question = self._questions.get(p_key)
        if question is None or (client_id is not None and question.client_id != client_id):
            return None
        if asker is not None and not question.held_by(asker):
            return None
        return self._remove(p_key)

    async def take_client(self, client_id: str, *, only_fail_fast: bool = False) -> list[Question]:
        taken = []
        for question in await self.client_questions(client_id):
            if only_fail_fast and question.on_disconnect != "fail":
                continue
            removed = self._remove(question.p_key)
            if removed is not None:
                taken.append(removed)
        return taken

    async def get_question(self, p_key: str, client_id: str | None = None) -> Question | None:
        question = self._questions.get(p_key)
        if question is None or (client_id is not None and question.client_id != client_id):
            return None
        return copy.copy(question)

    async def client_questions(self, client_id: str) -> list[Question]:
        keys = self._by_client.get(client_id, {})
        return [copy.copy(self._questions[k]) for k in sorted(keys, key=keys.__getitem__)]

    async def pending(
        self, client_id: str | None = None, conversation: str | None = None
    ) -> list[Question]:
        if client_id is not None:
            found = await self.client_questions(client_id)
        else:
            found = sorted((copy.copy(q) for q in self._questions.values()), key=lambda q: q.seq)
        return [q for q in found if conversation is None or q.conversation == conversation]

    async def expired_questions(self, now: float, limit: int = 1000) -> list[Question]:
        due = [q.p_key for q in self._questions.values() if q.expires_at <= now][:limit]
        return [q for q in (self._remove(k) for k in due) if q is not None]

    # ------------------------------------------------------------------ presence
    async def open_connection(
        self, client_id: str, server_id: str, channel_name: str, now: float
    ) -> Connection | None:
        previous = self._connections.get(client_id)
        self._connections[client_id] = Connection(client_id, server_id, channel_name, now, now)
        return copy.copy(previous) if previous else None

    async def close_connection(self, client_id: str, channel_name: str, now: float) -> bool:
        record = self._connections.get(client_id)
        if record is None or record.channel_name != channel_name or record.closed_at is not None:
            return False
        record.closed_at = now
        return True

    async def touch(self, client_id: str, now: float) -> bool:
        record = self._connections.get(client_id)
        if record is None or record.closed_at is not None:
            return False
        record.last_seen = max(record.last_seen, now)
        record.alive_sent_at = None
        return True

    async def mark_alive_sent(self, client_id: str, now: float) -> None:
        record = self._connections.get(client_id)
        if record is not None and record.closed_at is None:
            record.alive_sent_at = now

    async def connection(self, client_id: str) -> Connection | None:
        record = self._connections.get(client_id)
        return copy.copy(record) if record else None

    async def connections(self) -> list[Connection]:
        return [copy.copy(c) for c in self._connections.values()]

    async def silent_since(self, before: float, limit: int = 1000) -> list[str]:
        found = [
            c for c in self._connections.values() if c.closed_at is None and c.last_seen < before
        ]
        return [c.client_id for c in sorted(found, key=lambda c: c.last_seen)[:limit]]

    async def closed_since(self, before: float, limit: int = 1000) -> list[str]:
        found = [
            c for c in self._connections.values() if c.closed_at is not None and c.closed_at < before
        ]
        return [c.client_id for c in sorted(found, key=lambda c: c.closed_at or 0)[:limit]]

    async def forget_client(
        self, client_id: str, claims: Sequence[str] = (), *, only_if_absent: bool = False
    ) -> tuple[list[Question], str | None] | None:
        if only_if_absent and client_id in self._connections:
            return None
        taken = await self.take_client(client_id)
        connection = self._connections.pop(client_id, None)
        self._journals.pop(client_id, None)
        for key in [k for k in self._unconsumed if k[0] == client_id]:
            del self._unconsumed[key]
        for name in claims:
            self._values.pop("claim:" + name, None)
        return taken, connection.channel_name if connection is not None and connection.is_open else None

    # ------------------------------------------------------------------ coordination
    async def acquire_lock(self, name: str, owner: str, ttl: float) -> bool:
        held = self._locks.get(name)
        now = time.monotonic()
        if held is not None and held[1] > now and held[0] != owner:
            return False
        self._locks[name] = (owner, now + ttl)
        return True

    async def release_lock(self, name: str, owner: str) -> None:
        held = self._locks.get(name)
        if held is not None and held[0] == owner:
            del self._locks[name]

    async def claim(self, name: str, owner: str, ttl: float, *, client_id: str | None = None) -> str:
        holder = await self.get_value("claim:" + name)
        if holder is None or holder == owner:
            await self.set_value("claim:" + name, owner, ttl)
            return owner
        return holder

    async def admit_socket(self, name: str, member: str, *, limit: int, now: float, max_age: float) -> bool:
        members = self._sockets.setdefault(name, {})
        for stale in [m for m, at in members.items() if at < now - max_age]:
            del members[stale]
        if member not in members and len(members) >= limit:
            return False
        members[member] = now
        return True

    async def release_socket(self, name: str, member: str) -> None:
        members = self._sockets.get(name)
        if members is not None:
            members.pop(member, None)
            if not members:
                del self._sockets[name]

    async def set_value(self, name: str, value: str, ttl: float | None) -> None:
        self._values[name] = (value, None if ttl is None else time.monotonic() + ttl)

    async def get_value(self, name: str) -> str | None:
        item = self._values.get(name)
        if item is None:
            return None
        if item[1] is not None and item[1] <= time.monotonic():
            del self._values[name]
            return None
        return item[0]

    async def publish(self, server_id: str, event: dict[str, Any]) -> int:
        callback = self._callbacks.get(server_id)
        if callback is None:
            logger.debug("no listener for server %s", server_id)
            return 0
        result = callback(event)
        if inspect.isawaitable(result):
            await result
        return 1

    async def subscribe(self, server_id: str, callback: SettlementCallback) -> None:
        self._callbacks[server_id] = callback

    async def check(self) -> bool:
        return True

    # ------------------------------------------------------------------ sweep and health
    async def get_connections(self, client_ids: list[str]) -> list[Connection]:
        found = (self._connections.get(client_id) for client_id in client_ids)
        return [copy.copy(c) for c in found if c is not None]

    async def evict(
        self, client_id: str, *, alive_sent_at: float | None = None, closed_at: float | None = None
    ) -> bool:
        if (alive_sent_at is None) == (closed_at is None):
            raise ValueError("evict() needs exactly one of alive_sent_at and closed_at")
        record = self._connections.get(client_id)
        if record is None:
            return False
        if alive_sent_at is not None:
            still = record.closed_at is None and record.alive_sent_at == alive_sent_at
        else:
            still = record.closed_at == closed_at
        if still:
            del self._connections[client_id]
        return still

    async def seen_since(self, after: float, limit: int = 1000) -> list[Connection]:
        found = sorted(
            (c for c in self._connections.values() if c.last_seen > after), key=lambda c: c.last_seen
        )
        return [copy.copy(c) for c in found[:limit]]

    async def count_expired(self, now: float) -> int:
        return sum(1 for q in self._questions.values() if q.expires_at <= now)

    async def orphaned_clients(self, limit: int = 1000) -> list[str]:
        return [c for c in self._by_client if c not in self._connections][:limit]

    async def take_orphaned(self, client_id: str) -> list[Question]:
        if client_id in self._connections:
            return []
        return await self.take_client(client_id)

    async def prune_indexes(self, *, remove: bool = True) -> int:
        return 0  # records here never expire on their own, so no index outlives its record

    async def stats(self) -> StoreStats:
        closed = sum(1 for c in self._connections.values() if c.closed_at is not None)
        return StoreStats(
            open_connections=len(self._connections) - closed,
            closed_connections=closed,
            questions=len(self._questions),
            oldest_asked_at=min((q.asked_at for q in self._questions.values()), default=None),
        )

    async def delete_value(self, name: str) -> None:
        self._values.pop(name, None)
