"""Redis store: questions and presence shared by every process using one Redis server.

Key names come from :meth:`RedisStore.key` only. TTLs: questions live until their expiry plus
the reconnect grace; presence records until the liveness windows plus ``SESSION_RETENTION``.
Three sorted-set indexes (``idx:q``, ``idx:seen``, ``idx:closed``) and the ``seq`` counter have no
TTL: they are process-independent indexes whose members are removed with their records, and
members whose record expired are removed by the sweep and by the scripts that meet them.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from typing import Any

from chat_ws.exceptions import TooManyPending
from chat_ws.store import scripts
from chat_ws.store.base import (
    BaseStore,
    Connection,
    SettlementCallback,
    StoreStats,
    question_from_json,
    question_to_json,
)
from chat_ws.store.redis_connections import LoopConnections, LoopState, unavailable
from chat_ws.store.resp import Script
from chat_ws.types import Question

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _script(source: str) -> Script:
    """The Script (source and SHA) of one of chat_ws.store.scripts' sources."""
    return Script(source)


class RedisStore(BaseStore):
    """The shared store; requires ``REDIS_URL``."""

    def __init__(self, conf: dict[str, Any]) -> None:
        super().__init__(conf)
        url = conf.get("REDIS_URL")
        if not url:
            from chat_ws.exceptions import ConfigurationError

            raise ConfigurationError("RedisStore needs CHAT_WS['REDIS_URL']")
        self.url: str = url
        self.prefix: str = conf["KEY_PREFIX"]
        self.pool_size: int = conf["REDIS_POOL_SIZE"]
        self._connections = LoopConnections(
            url, self.pool_size, float(conf["REDIS_TIMEOUT"]), int(conf["REDIS_MAX_IN_FLIGHT"])
        )

    # ------------------------------------------------------------------ plumbing
    def key(self, kind: str, *parts: str) -> str:
        """The one place Redis key names are built: ``{prefix}:{kind}:{part}:...``."""
        return ":".join((self.prefix, kind, *parts))

    def _state(self) -> LoopState:
        return self._connections.state()

    @property
    def redis(self) -> Any:
        """The Redis client of the running event loop (typed Any: redis-py's replies are unions)."""
        return self._state().client

    def _run(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """One script call on the pipelined connection (an awaitable of its reply).

        Calls on that connection raise StoreUnavailable themselves; only methods that use
        redis-py (``self.redis``) need ``@unavailable``.
        """
        return self._state().fast.evalsha(_script(source), keys, args)

    def _call(self, *args: Any) -> Any:
        """One plain command on the pipelined connection (an awaitable of its reply)."""
        return self._state().fast.call(*args)

    def _question_ttl_ms(self, question: Question) -> int:
        grace = float(self.conf["RECONNECT_GRACE"])
        return max(1000, int((question.expires_at - question.asked_at + grace + 60) * 1000))

    def _open_ttl_ms(self) -> int:
        c = self.conf
        seconds = c["INACTIVITY_TIMEOUT"] + c["ALIVE_RESPONSE_TIMEOUT"] + c["SESSION_RETENTION"]
        return int(seconds * 1000)

    def _closed_ttl_ms(self) -> int:
        return int((self.conf["RECONNECT_GRACE"] + self.conf["SESSION_RETENTION"]) * 1000)

    @staticmethod
    def _questions(records: list[bytes] | None) -> list[Question]:
        return [question_from_json(r) for r in records or []]

    # ------------------------------------------------------------------ questions
    async def ask_question(self, question: Question, *, max_pending: int) -> tuple[str, Question | None]:
        keys = [
            self.key("q", question.p_key),
            self.key("cq", question.client_id),
            self.key("cv", question.client_id, question.conversation),
            self.key("idx", "q"),
            self.key("seq"),
            self.key("conn", question.client_id),
        ]
        args: list[Any] = [
            question_to_json(question),
            question.p_key,
            repr(question.expires_at),
            self._question_ttl_ms(question),
            max_pending,
            question.on_disconnect,
        ]
        state, seq = await self._run(scripts.ADD_QUESTION, keys, args)
        state = state.decode()
        if state == "full":
            raise TooManyPending(
                f"client already has {max_pending} pending questions",
                p_key=question.p_key,
                client_id=question.client_id,
            )
        if seq is None:
            return state, None
        question.seq = int(seq)  # the record as stored, without decoding it back
        return state, question

    async def resolve(self, client_id: str, p_keys: list[str]) -> Question | None:
        if not p_keys:
            return None
        rec = await self._run(scripts.RESOLVE, [self.key("cq", client_id)], [self.prefix, *p_keys])
        return question_from_json(rec) if rec else None

    async def take(self, p_key: str) -> Question | None:
        rec = await self._run(scripts.TAKE, [], [self.prefix, p_key])
        return question_from_json(rec) if rec else None

    async def take_client(self, client_id: str, *, only_fail_fast: bool = False) -> list[Question]:
        records = await self._run(
            scripts.TAKE_CLIENT, [self.key("cq", client_id)], [self.prefix, int(only_fail_fast)]
        )
        return self._questions(records)

    async def get_question(self, p_key: str) -> Question | None:
        rec = await self._call("GET", self.key("q", p_key))
        return question_from_json(rec) if rec else None

    async def _load(self, p_keys: list[bytes]) -> list[Question]:
        if not p_keys:
            return []
        records = await self.redis.mget([self.key("q", k.decode()) for k in p_keys])
        return sorted(self._questions([r for r in records if r]), key=lambda q: q.seq)

    @unavailable
    async def client_questions(self, client_id: str) -> list[Question]:
        return await self._load(await self.redis.zrange(self.key("cq", client_id), 0, -1))

    @unavailable
    async def pending(
        self, client_id: str | None = None, conversation: str | None = None
    ) -> list[Question]:
        if client_id is not None and conversation is not None:
            members = await self.redis.zrange(self.key("cv", client_id, conversation), 0, -1)
        elif client_id is not None:
            members = await self.redis.zrange(self.key("cq", client_id), 0, -1)
        else:
            members = await self.redis.zrange(self.key("idx", "q"), 0, -1)
        found = await self._load(members)
        return [q for q in found if conversation is None or q.conversation == conversation]

    async def expired_questions(self, now: float, limit: int = 1000) -> list[Question]:
        records = await self._run(
            scripts.EXPIRED, [self.key("idx", "q")], [self.prefix, repr(now), limit]
        )
        return self._questions(records)

    # ------------------------------------------------------------------ presence
    def _presence_keys(self, client_id: str) -> list[str]:
        return [self.key("conn", client_id), self.key("idx", "seen"), self.key("idx", "closed")]

    @staticmethod
    def _connection(client_id: str, fields: dict[bytes, bytes] | list[bytes]) -> Connection | None:
        if isinstance(fields, list):
            fields = dict(zip(fields[::2], fields[1::2]))
        if not fields:
            return None
        f = {k.decode(): v.decode() for k, v in fields.items()}
        return Connection(
            client_id=client_id,
            server_id=f.get("server_id", ""),
            channel_name=f.get("channel_name", ""),
            connected_at=float(f.get("connected_at", 0)),
            last_seen=float(f.get("last_seen", 0)),
            closed_at=float(f["closed_at"]) if "closed_at" in f else None,
            alive_sent_at=float(f["alive_sent_at"]) if "alive_sent_at" in f else None,
        )

    async def open_connection(
        self, client_id: str, server_id: str, channel_name: str, now: float
    ) -> Connection | None:
        prev = await self._run(
            scripts.OPEN,
            self._presence_keys(client_id),
            [client_id, server_id, channel_name, repr(now), self._open_ttl_ms()],
        )
        return self._connection(client_id, prev)

    async def connect_client(
        self, client_id: str, server_id: str, channel_name: str, now: float
    ) -> tuple[Connection | None, list[Question]]:
        prev, records = await self._run(
            scripts.CONNECT,
            [*self._presence_keys(client_id), self.key("cq", client_id)],
            [client_id, server_id, channel_name, repr(now), self._open_ttl_ms(), self.prefix],
        )
        return self._connection(client_id, prev), self._questions(records)  # in seq order (ZRANGE)

    async def close_connection(self, client_id: str, channel_name: str, now: float) -> bool:
        done = await self._run(
            scripts.CLOSE,
            self._presence_keys(client_id),
            [client_id, channel_name, repr(now), self._closed_ttl_ms()],
        )
        return bool(done)

    async def touch(self, client_id: str, now: float) -> bool:
        done = await self._run(
            scripts.TOUCH,
            self._presence_keys(client_id)[:2],
            [client_id, repr(now), self._open_ttl_ms()],
        )
        return bool(done)

    async def mark_alive_sent(self, client_id: str, now: float) -> None:
        await self._run(scripts.MARK_ALIVE_SENT, [self.key("conn", client_id)], [repr(now)])

    async def connection(self, client_id: str) -> Connection | None:
        return self._connection(client_id, await self._call("HGETALL", self.key("conn", client_id)))

    @unavailable
    async def connections(self) -> list[Connection]:
        ids = await self.redis.zrange(self.key("idx", "seen"), 0, -1)
        ids += await self.redis.zrange(self.key("idx", "closed"), 0, -1)
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hgetall(self.key("conn", cid.decode()))
            rows = await pipe.execute()
        found = (self._connection(cid.decode(), row) for cid, row in zip(ids, rows))
        return [c for c in found if c is not None]

    @unavailable
    async def silent_since(self, before: float, limit: int = 1000) -> list[str]:
        ids = await self.redis.zrangebyscore(
            self.key("idx", "seen"), "-inf", f"({before!r}", start=0, num=limit
        )
        return [i.decode() for i in ids]

    @unavailable
    async def closed_since(self, before: float, limit: int = 1000) -> list[str]:
        ids = await self.redis.zrangebyscore(
            self.key("idx", "closed"), "-inf", f"({before!r}", start=0, num=limit
        )
        return [i.decode() for i in ids]

    async def forget_client(
        self, client_id: str, claims: Sequence[str] = (), *, only_if_absent: bool = False
    ) -> tuple[list[Question], str | None] | None:
        forgotten = await self._run(
            scripts.FORGET,
            [self.key("cq", client_id), *self._presence_keys(client_id), *(self.key("claim", c) for c in claims)],
            [self.prefix, client_id, int(only_if_absent)],
        )
        if forgotten is None:
            return None
        channel_name, records = forgotten
        return self._questions(records), channel_name.decode() if channel_name is not None else None

    # ------------------------------------------------------------------ coordination
    async def acquire_lock(self, name: str, owner: str, ttl: float) -> bool:
        done = await self._call("SET", self.key("lock", name), owner, "NX", "PX", int(ttl * 1000))
        return bool(done)

    async def release_lock(self, name: str, owner: str) -> None:
        await self._run(scripts.RELEASE_LOCK, [self.key("lock", name)], [owner])

    async def claim(self, name: str, owner: str, ttl: float) -> str:
        holder = await self._run(scripts.CLAIM, [self.key("claim", name)], [owner, int(ttl * 1000)])
        return holder.decode() if isinstance(holder, bytes) else str(holder)

    async def admit_socket(self, name: str, member: str, *, limit: int, now: float, max_age: float) -> bool:
        done = await self._run(
            scripts.ADMIT_SOCKET,
            [self.key("sockets", name)],
            [member, repr(now), repr(now - max_age), limit, int(max_age * 1000)],
        )
        return bool(done)

    async def release_socket(self, name: str, member: str) -> None:
        await self._call("ZREM", self.key("sockets", name), member)

    async def set_value(self, name: str, value: str, ttl: float | None) -> None:
        if ttl is None:
            await self._call("SET", self.key("val", name), value)
        else:
            await self._call("SET", self.key("val", name), value, "PX", max(1, int(ttl * 1000)))

    async def get_value(self, name: str) -> str | None:
        value = await self._call("GET", self.key("val", name))
        return value.decode() if value is not None else None

    async def publish(self, server_id: str, event: dict[str, Any]) -> int:
        return int(await self._call("PUBLISH", self.key("srv", server_id), json.dumps(event)))

    async def subscribe(self, server_id: str, callback: SettlementCallback) -> None:
        await self._connections.subscribe(self.key("srv", server_id), callback)

    async def check(self) -> bool:
        return bool(await self._call("PING"))

    async def close(self) -> None:
        """Stop this loop's listener and close its connections."""
        await self._connections.close()

    # ------------------------------------------------------------------ sweep and health
    SCAN_PAGE = 500  # index members one sweep or health script call examines (keeps calls short)

    @staticmethod
    def _names(members: Any) -> list[str]:
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    @unavailable
    async def get_connections(self, client_ids: list[str]) -> list[Connection]:
        if not client_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for client_id in client_ids:
                pipe.hgetall(self.key("conn", client_id))
            rows = await pipe.execute()
        found = (self._connection(cid, row) for cid, row in zip(client_ids, rows))
        return [c for c in found if c is not None]

    async def evict(
        self, client_id: str, *, alive_sent_at: float | None = None, closed_at: float | None = None
    ) -> bool:
        if (alive_sent_at is None) == (closed_at is None):
            raise ValueError("evict() needs exactly one of alive_sent_at and closed_at")
        field, value = ("alive_sent_at", alive_sent_at) if closed_at is None else ("closed_at", closed_at)
        done = await self._run(
            scripts.EVICT, self._presence_keys(client_id), [client_id, field, repr(value)]
        )
        return bool(done)

    @unavailable
    async def seen_since(self, after: float, limit: int = 1000) -> list[Connection]:
        low = f"({after!r}"
        ids = self._names(
            await self.redis.zrangebyscore(self.key("idx", "seen"), low, "+inf", start=0, num=limit)
        )
        # closed_at >= last_seen, so a closed record heard from after `after` closed after it too
        ids += self._names(
            await self.redis.zrangebyscore(self.key("idx", "closed"), low, "+inf", start=0, num=limit)
        )
        records = await self.get_connections(ids)
        found = sorted((c for c in records if c.last_seen > after), key=lambda c: c.last_seen)
        return found[:limit]

    @unavailable
    async def count_expired(self, now: float) -> int:
        return int(await self.redis.zcount(self.key("idx", "q"), "-inf", repr(now)))

    async def orphaned_clients(self, limit: int = 1000) -> list[str]:
        found: list[str] = []
        start = 0
        while len(found) < limit:
            examined, orphans = await self._run(
                scripts.ORPHANED_CLIENTS,
                [self.key("idx", "q")],
                [self.prefix, start, start + self.SCAN_PAGE - 1],
            )
            for raw in orphans:
                client_id = raw.decode()
                if client_id not in found:
                    found.append(client_id)
            if examined < self.SCAN_PAGE:
                break
            start += self.SCAN_PAGE
        return found[:limit]

    async def take_orphaned(self, client_id: str) -> list[Question]:
        records = await self._run(
            scripts.TAKE_ORPHANED,
            [self.key("cq", client_id), self.key("conn", client_id)],
            [self.prefix],
        )
        return self._questions(records)

    async def prune_indexes(self, *, remove: bool = True) -> int:
        total = 0
        for index, kind in (("seen", "conn"), ("closed", "conn"), ("q", "q")):
            start = 0
            while True:
                examined, dead = await self._run(
                    scripts.PRUNE,
                    [self.key("idx", index)],
                    [self.prefix, kind, start, start + self.SCAN_PAGE - 1, int(remove)],
                )
                total += dead
                if examined < self.SCAN_PAGE:
                    break
                start += self.SCAN_PAGE - (dead if remove else 0)
        return total

    @unavailable
    async def stats(self) -> StoreStats:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.key("idx", "seen"))
            pipe.zcard(self.key("idx", "closed"))
            pipe.zcard(self.key("idx", "q"))
            open_count, closed_count, questions = await pipe.execute()
        oldest: float | None = None
        start = 0
        while questions:
            examined, found = await self._run(
                scripts.OLDEST_ASKED,
                [self.key("idx", "q")],
                [self.prefix, start, start + self.SCAN_PAGE - 1],
            )
            if found is not None:
                value = float(found)
                oldest = value if oldest is None else min(oldest, value)
            if examined < self.SCAN_PAGE:
                break
            start += self.SCAN_PAGE
        return StoreStats(
            open_connections=int(open_count),
            closed_connections=int(closed_count),
            questions=int(questions),
            oldest_asked_at=oldest,
        )

    async def delete_value(self, name: str) -> None:
        await self._call("DEL", self.key("val", name))

