"""Redis store: questions and presence shared by every process, on one Redis server or on a
Redis Cluster (``CHAT_WS["REDIS_CLUSTER"]``).

Key names come from :meth:`RedisStore.key` and :meth:`RedisStore.bucket_key` only, and the
layout is the same on one server and on a cluster (chat_ws.store.scripts lists the keys). Keys
fall into ``KEY_BUCKETS`` buckets, each hash-tagged (``{prefix}:{<bucket>}:...``) so that it lives
in one cluster slot; a client's records live in the bucket of its client-id's CRC-32, and the
p-keys chat_ws makes carry that hash (chat_ws.store.base.p_key_hash), so every call touches one
slot. The sweep, health and admin listings walk the buckets.

TTLs: presence records live until the liveness windows plus ``SESSION_RETENTION``; a client's
question index until its last question's expiry plus the reconnect grace. Question records live
in their bucket's hash until taken: answered, cancelled, timed out by their asker, or expired
and taken by the sweep. Index members whose record expired are removed by the sweep and by the
scripts that meet them.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import json
import logging
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, TypeVar

from chat_ws.exceptions import StoreUnavailable, TooManyPending
from chat_ws.store import scripts
from chat_ws.store.base import (
    BaseStore,
    Connection,
    NodeStats,
    SettlementCallback,
    StoreStats,
    client_hash,
    entry_from_json,
    p_key_hash,
    question_from_json,
    question_to_json,
    record_json,
)
from chat_ws.store.cluster import ClusterConnection
from chat_ws.store.redis_connections import LoopConnections, LoopState
from chat_ws.store.resp import Script
from chat_ws.codec import JSON
from chat_ws.types import JOURNAL_SEPARATOR, JournalEntry, Message, Question

logger = logging.getLogger(__name__)
T = TypeVar("T")


@functools.lru_cache(maxsize=None)
def _script(source: str) -> Script:
    """The Script (source and SHA) of one of chat_ws.store.scripts' sources."""
    return Script(source)


async def _each(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Await calls issued together (they share pipelined writes), in order."""
    return list(await asyncio.gather(*calls))


async def _each_bucket(what: str, calls: dict[int, Awaitable[T]]) -> dict[int, T]:
    """Per-bucket sweep work issued together: the buckets that answered. A bucket whose master is
    unreachable is logged and left for the next pass, so one master down does not stop the sweep
    for the others; only when no bucket answers does the StoreUnavailable go up."""
    results = await asyncio.gather(*calls.values(), return_exceptions=True)
    done: dict[int, T] = {}
    failed: list[BaseException] = []
    for bucket, result in zip(calls, results):
        if isinstance(result, StoreUnavailable):
            failed.append(result)
        elif isinstance(result, BaseException):
            raise result
        else:
            done[bucket] = result
    if failed:
        if not done and calls:
            raise failed[0]
        logger.warning("%s: %d of %d key buckets unreachable (%s); the next pass retries them", what, len(failed), len(calls), failed[0])
    return done


class RedisStore(BaseStore):
    """The shared store; requires ``REDIS_URL``."""

    answers_as_json = True

    def __init__(self, conf: dict[str, Any]) -> None:
        super().__init__(conf)
        url = conf.get("REDIS_URL")
        if not url:
            from chat_ws.exceptions import ConfigurationError

            raise ConfigurationError("RedisStore needs CHAT_WS['REDIS_URL']")
        self.url: str = url
        self.prefix: str = conf["KEY_PREFIX"]
        self.buckets: int = int(conf["KEY_BUCKETS"])
        self.cluster: bool = bool(conf["REDIS_CLUSTER"])
        self.pool_size: int = conf["REDIS_POOL_SIZE"]
        self._connections = LoopConnections(
            url, self.pool_size, float(conf["REDIS_TIMEOUT"]), int(conf["REDIS_MAX_IN_FLIGHT"]), self.cluster
        )
        # Index keys of every bucket, built once: the sweep and health walk them.
        self._all = [f"{self.prefix}:{{{b}}}" for b in range(self.buckets)]
        self._expiry_start = 0  # the bucket the next expiry sweep serves first

    # ------------------------------------------------------------------ key layout
    def key(self, kind: str, *parts: str) -> str:
        """A key outside the buckets (locks, claims without a client, values, pub/sub channels):
        ``{prefix}:{kind}:{part}:...``."""
        return ":".join((self.prefix, kind, *parts))

    def bucket(self, client_id: str) -> int:
        """The key bucket of a client."""
        return client_hash(client_id) % self.buckets

    def bucket_key(self, bucket: int, kind: str, *parts: str) -> str:
        """A key of one bucket: ``{prefix}:{<bucket>}:{kind}:{part}:...`` (one cluster slot)."""
        return ":".join((self._all[bucket], kind, *parts))

    def client_key(self, client_id: str, kind: str, *parts: str) -> str:
        """A key in the client's bucket."""
        return self.bucket_key(self.bucket(client_id), kind, *parts)

    def _p_key_buckets(self, p_key: str) -> list[int]:
        """Where a question known only by its p-key may be: the bucket its p-key names; a p-key
        not made by chat_ws (tests, old layouts) may be in any bucket."""
        found = p_key_hash(p_key)
        if found is not None:
            return [found % self.buckets]
        return list(range(self.buckets))

    # ------------------------------------------------------------------ plumbing
    def _state(self) -> LoopState:
        return self._connections.state()

    def _run(self, source: str, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        """One script call on the pipelined connection (an awaitable of its reply); its calls
        raise StoreUnavailable themselves."""
        return self._state().fast.evalsha(_script(source), keys, args)

    def _call(self, *args: Any) -> Awaitable[Any]:
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

    def _question_keys(self, client_id: str) -> list[str]:
        """cq, q, idx:q, qs of the client's bucket (the order RESOLVE, TAKE_CLIENT expect)."""
        base = self._all[self.bucket(client_id)]
        return [f"{base}:cq:{client_id}", f"{base}:q", f"{base}:idx:q", f"{base}:qs"]

    def _journal_keys(self, client_id: str, b: int | None = None) -> list[str]:
        """j, ja, idx:a of the client's bucket (b: its bucket, when the caller has it)."""
        base = self._all[self.bucket(client_id) if b is None else b]
        return [f"{base}:j:{client_id}", f"{base}:ja:{client_id}", f"{base}:idx:a"]

    # ------------------------------------------------------------------ questions
    async def ask_question(
        self, question: Question, *, max_pending: int
    ) -> tuple[str, Question | JournalEntry | None]:
        b = self.bucket(question.client_id)
        client_id = question.client_id
        keys = [
            self.bucket_key(b, "q"),
            self.bucket_key(b, "cq", client_id),
            self.bucket_key(b, "idx", "q"),
            self.bucket_key(b, "seq"),
            self.bucket_key(b, "conn", client_id),
            self.bucket_key(b, "qs"),
            *self._journal_keys(client_id, b),
        ]
        args: list[Any] = [
            question_to_json(question),
            question.p_key,
            repr(question.expires_at),
            self._question_ttl_ms(question),
            max_pending,
            question.on_disconnect,
            client_id,
            question.conversation,
            question.journal_field or "",
        ]
        state, seq = await self._run(scripts.ADD_QUESTION, keys, args)
        state = state.decode()
        if state == "answered":
            return state, entry_from_json(seq)
        if state == "pending":
            return state, question_from_json(seq)
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

    async def resolve(
        self,
        client_id: str,
        p_keys: list[str],
        answer: Message | None = None,
        now: float = 0.0,
        *,
        answer_json: str | None = None,
    ) -> Question | None:
        if not p_keys:
            return None
        base = self._all[self.bucket(client_id)]
        keys = [
            f"{base}:cq:{client_id}", f"{base}:q", f"{base}:idx:q", f"{base}:qs",
            f"{base}:j:{client_id}", f"{base}:ja:{client_id}", f"{base}:idx:a",
        ]  # fmt: skip
        if answer_json is None:
            answer_json = JSON.encode(answer) if answer is not None else "null"
        args = [client_id, answer_json, repr(now), self._journal_ttl, *p_keys]
        rec = await self._run(scripts.RESOLVE, keys, args)
        return question_from_json(rec) if rec else None

    @functools.cached_property
    def _journal_ttl(self) -> int:
        """Milliseconds a client's journal outlives its last write: its presence record's
        lifetime, open or disconnected (a forget drops it earlier)."""
        return max(self._closed_ttl_ms(), self._open_ttl_ms())

    async def take_over(self, question: Question) -> bool:
        done = await self._run(
            scripts.TAKEOVER, [self.client_key(question.client_id, "q")], [question.p_key, record_json(question)]
        )
        return bool(done)

    async def consume(self, client_id: str, conversation: str, *, forget: bool = False) -> None:
        j, ja, ida = self._journal_keys(client_id)
        await self._run(scripts.CONSUME, [ja, ida, j], [client_id, conversation, int(forget)])

    async def journal(self, client_id: str) -> dict[str, JournalEntry | str]:
        j = self._journal_keys(client_id)[0]
        rows = await self._call("HGETALL", j)
        out: dict[str, JournalEntry | str] = {}
        for field, value in zip(rows[::2], rows[1::2]):
            out[field.decode()] = entry_from_json(value) if value.startswith(b"{") else value[1:].decode()
        return out

    async def unconsumed_answers(self, before: float, now: float, limit: int = 1000) -> list[JournalEntry]:
        due = await _each_bucket(
            "unconsumed answers",
            {
                b: self._call("ZRANGEBYSCORE", self.bucket_key(b, "idx", "a"), "-inf", f"({before!r}", "LIMIT", 0, limit)
                for b in range(self.buckets)
            },
        )
        claims: list[Awaitable[Any]] = []
        for b, members in due.items():
            for member in self._names(members)[: max(0, limit - len(claims))]:
                client_id, field = member.split(JOURNAL_SEPARATOR, 1)
                claims.append(
                    self._run(
                        scripts.CLAIM_ANSWER,
                        [self.bucket_key(b, "idx", "a"), self.bucket_key(b, "j", client_id), self.bucket_key(b, "ja", client_id)],
                        [member, field, repr(before), repr(now)],
                    )
                )
        return [entry_from_json(e) for e in await _each(claims) if e]

    async def take(
        self, p_key: str, client_id: str | None = None, *, asker: Question | None = None
    ) -> Question | None:
        if client_id is not None:
            b, owner = self.bucket(client_id), client_id
        else:
            found = await self._locate(p_key)
            if found is None:
                return None
            b, owner = found[0], found[1].client_id
        keys = [
            self.bucket_key(b, "q"),
            self.bucket_key(b, "idx", "q"),
            self.bucket_key(b, "cq", owner),
            self.bucket_key(b, "qs"),
        ]
        held = [asker.server_id, asker.asker] if asker is not None else ["", 0]
        rec = await self._run(scripts.TAKE, keys, [p_key, owner, *held])
        return question_from_json(rec) if rec else None

    async def _locate(self, p_key: str) -> tuple[int, Question] | None:
        """The bucket and record of a question known only by its p-key: the bucket its p-key
        names, or, for a p-key chat_ws did not make, every bucket at once."""
        buckets = self._p_key_buckets(p_key)
        records = await _each(self._call("HGET", self.bucket_key(b, "q"), p_key) for b in buckets)
        for b, rec in zip(buckets, records):
            if rec is not None:
                return b, question_from_json(rec)
        return None

    async def take_client(self, client_id: str, *, only_fail_fast: bool = False) -> list[Question]:
        records = await self._run(scripts.TAKE_CLIENT, self._question_keys(client_id), [int(only_fail_fast)])
        return self._questions(records)

    async def get_question(self, p_key: str, client_id: str | None = None) -> Question | None:
        if client_id is None:
            found = await self._locate(p_key)
            return found[1] if found is not None else None
        rec = await self._call("HGET", self.client_key(client_id, "q"), p_key)
        question = question_from_json(rec) if rec is not None else None
        return question if question is not None and question.client_id == client_id else None

    async def client_questions(self, client_id: str) -> list[Question]:
        b = self.bucket(client_id)
        members = await self._call("ZRANGE", self.bucket_key(b, "cq", client_id), 0, -1)
        if not members:
            return []
        records = await self._call("HMGET", self.bucket_key(b, "q"), *members)
        return sorted(self._questions([r for r in records if r]), key=lambda q: q.seq)

    async def pending(
        self, client_id: str | None = None, conversation: str | None = None
    ) -> list[Question]:
        if client_id is not None:
            found = await self.client_questions(client_id)
        else:
            rows = await _each(self._call("HVALS", self.bucket_key(b, "q")) for b in range(self.buckets))
            found = sorted(
                (q for row in rows for q in self._questions(row)), key=lambda q: (q.asked_at, q.seq)
            )
        return [q for q in found if conversation is None or q.conversation == conversation]

    async def expired_questions(self, now: float, limit: int = 1000) -> list[Question]:
        """Count each bucket's expired questions, share ``limit`` among the buckets that have
        some (starting at a bucket that moves on every call, so no bucket waits behind the others),
        then take them: two rounds of calls issued together, whatever the number of buckets."""
        due = await _each_bucket(
            "expired questions",
            {b: self._call("ZCOUNT", self.bucket_key(b, "idx", "q"), "-inf", repr(now)) for b in range(self.buckets)},
        )
        start, self._expiry_start = self._expiry_start, (self._expiry_start + 1) % self.buckets
        allotted: dict[int, int] = {}
        left = limit
        for b in [*range(start, self.buckets), *range(start)]:
            if left <= 0:
                break
            if due.get(b):
                allotted[b] = min(int(due[b]), left)
                left -= allotted[b]
        taken = await _each_bucket(
            "expired questions",
            {
                b: self._run(
                    scripts.EXPIRED,
                    [self.bucket_key(b, "idx", "q"), self.bucket_key(b, "q"), self.bucket_key(b, "qs")],
                    [repr(now), n],
                )
                for b, n in allotted.items()
            },
        )
        return [q for records in taken.values() for q in self._questions(records)]

    # ------------------------------------------------------------------ presence
    def _presence_keys(self, client_id: str, b: int | None = None) -> list[str]:
        """conn, idx:seen, idx:closed of the client (b: its bucket, when the caller has it)."""
        b = self.bucket(client_id) if b is None else b
        return [
            self.bucket_key(b, "conn", client_id),
            self.bucket_key(b, "idx", "seen"),
            self.bucket_key(b, "idx", "closed"),
        ]

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
        b = self.bucket(client_id)
        prev, records = await self._run(
            scripts.CONNECT,
            [*self._presence_keys(client_id, b), self.bucket_key(b, "cq", client_id), self.bucket_key(b, "q")],
            [client_id, server_id, channel_name, repr(now), self._open_ttl_ms()],
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
        b = self.bucket(client_id)
        done = await self._run(
            scripts.TOUCH,
            [self.bucket_key(b, "conn", client_id), self.bucket_key(b, "idx", "seen")],
            [client_id, repr(now), self._open_ttl_ms()],
        )
        return bool(done)

    async def mark_alive_sent(self, client_id: str, now: float) -> None:
        await self._run(scripts.MARK_ALIVE_SENT, [self.client_key(client_id, "conn", client_id)], [repr(now)])

    async def connection(self, client_id: str) -> Connection | None:
        return self._connection(client_id, await self._call("HGETALL", self.client_key(client_id, "conn", client_id)))

    async def connections(self) -> list[Connection]:
        ids: list[str] = []
        for members in await _each(
            self._call("ZRANGE", self.bucket_key(b, "idx", index), 0, -1)
            for b in range(self.buckets)
            for index in ("seen", "closed")
        ):
            ids.extend(self._names(members))
        return await self.get_connections(ids)

    async def _index_range(
        self, index: str, low: str, high: str, limit: int
    ) -> list[tuple[float, str]]:
        """(score, member) of every bucket's index between low and high, lowest first, at most limit."""
        rows = await _each_bucket(
            f"clients by {index} time",
            {
                b: self._call(
                    "ZRANGEBYSCORE", self.bucket_key(b, "idx", index), low, high, "WITHSCORES", "LIMIT", 0, limit
                )
                for b in range(self.buckets)
            },
        )
        merged = heapq.merge(
            *([(float(row[i + 1]), row[i].decode()) for i in range(0, len(row), 2)] for row in rows.values())
        )
        return [pair for pair, _ in zip(merged, range(limit))]

    async def silent_since(self, before: float, limit: int = 1000) -> list[str]:
        return [cid for _, cid in await self._index_range("seen", "-inf", f"({before!r}", limit)]

    async def closed_since(self, before: float, limit: int = 1000) -> list[str]:
        return [cid for _, cid in await self._index_range("closed", "-inf", f"({before!r}", limit)]

    async def forget_client(
        self, client_id: str, claims: Sequence[str] = (), *, only_if_absent: bool = False
    ) -> tuple[list[Question], str | None] | None:
        cq, q, idx, qs = self._question_keys(client_id)
        forgotten = await self._run(
            scripts.FORGET,
            [
                cq,
                *self._presence_keys(client_id),
                q,
                idx,
                qs,
                *self._journal_keys(client_id),
                *(self._claim_key(c, client_id) for c in claims),
            ],
            [client_id, int(only_if_absent)],
        )
        if forgotten is None:
            return None
        channel_name, records = forgotten
        return self._questions(records), channel_name.decode() if channel_name is not None else None

    # ------------------------------------------------------------------ coordination
    def _claim_key(self, name: str, client_id: str | None) -> str:
        if client_id is None:
            return self.key("claim", name)
        return self.client_key(client_id, "claim", name)

    async def acquire_lock(self, name: str, owner: str, ttl: float) -> bool:
        done = await self._call("SET", self.key("lock", name), owner, "NX", "PX", int(ttl * 1000))
        return bool(done)

    async def release_lock(self, name: str, owner: str) -> None:
        await self._run(scripts.RELEASE_LOCK, [self.key("lock", name)], [owner])

    async def claim(self, name: str, owner: str, ttl: float, *, client_id: str | None = None) -> str:
        holder = await self._run(scripts.CLAIM, [self._claim_key(name, client_id)], [owner, int(ttl * 1000)])
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
        command = "SPUBLISH" if self.cluster else "PUBLISH"
        return int(await self._call(command, self.key("srv", server_id), json.dumps(event)))

    async def subscribe(self, server_id: str, callback: SettlementCallback) -> None:
        await self._connections.subscribe(self.key("srv", server_id), callback)

    async def check(self) -> bool:
        fast = self._state().fast
        if not isinstance(fast, ClusterConnection):
            return bool(await fast.call("PING"))
        names = await fast.masters()
        replies = await asyncio.gather(*(fast.call_node(n, "PING") for n in names), return_exceptions=True)
        failed = [f"{n}: {r}" for n, r in zip(names, replies) if isinstance(r, BaseException)]
        if len(failed) == len(names):
            raise StoreUnavailable("no Redis Cluster master answers: " + "; ".join(failed))
        if failed:
            logger.warning("Redis Cluster masters not answering: %s", "; ".join(failed))
        return not failed

    async def nodes(self) -> list[NodeStats]:
        """Per Redis server (each master of a cluster): its address, keys and commands served, or
        the error that kept it from answering."""
        fast = self._state().fast
        if isinstance(fast, ClusterConnection):
            names = await fast.masters()
            calls: list[Awaitable[Any]] = [
                fast.call_node(n, *cmd) for n in names for cmd in (("DBSIZE",), ("INFO", "stats"))
            ]
        else:
            names = [f"{fast.address.host}:{fast.address.port}"]
            calls = [fast.call("DBSIZE"), fast.call("INFO", "stats")]
        replies = await asyncio.gather(*calls, return_exceptions=True)
        out = []
        for i, name in enumerate(names):
            keys, info = replies[2 * i], replies[2 * i + 1]
            if isinstance(keys, BaseException) or isinstance(info, BaseException):
                error = keys if isinstance(keys, BaseException) else info
                out.append(NodeStats(node=name, keys=None, commands=None, error=f"{type(error).__name__}: {error}"))
                continue
            fields = dict(line.split(":", 1) for line in info.decode().splitlines() if ":" in line)
            out.append(NodeStats(node=name, keys=int(keys), commands=int(fields.get("total_commands_processed", 0))))
        return out

    async def close(self) -> None:
        """Stop this loop's listener and close its connections."""
        await self._connections.close()

    # ------------------------------------------------------------------ sweep and health
    SCAN_PAGE = 500  # index members one sweep or health script call examines (keeps calls short)

    @staticmethod
    def _names(members: Any) -> list[str]:
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    async def get_connections(self, client_ids: list[str]) -> list[Connection]:
        rows = await _each(self._call("HGETALL", self.client_key(cid, "conn", cid)) for cid in client_ids)
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

    async def seen_since(self, after: float, limit: int = 1000) -> list[Connection]:
        low = f"({after!r}"
        ids = [cid for _, cid in await self._index_range("seen", low, "+inf", limit)]
        # closed_at >= last_seen, so a closed record heard from after `after` closed after it too
        ids += [cid for _, cid in await self._index_range("closed", low, "+inf", limit)]
        records = await self.get_connections(ids)
        found = sorted((c for c in records if c.last_seen > after), key=lambda c: c.last_seen)
        return found[:limit]

    async def count_expired(self, now: float) -> int:
        counts = await _each(
            self._call("ZCOUNT", self.bucket_key(b, "idx", "q"), "-inf", repr(now)) for b in range(self.buckets)
        )
        return sum(int(c) for c in counts)

    async def _question_pages(self, bucket: int) -> list[tuple[list[str], float | None]]:
        """Every page of one bucket's questions: (client-ids, oldest asked_at)."""
        pages = []
        start = 0
        while True:
            examined, clients, oldest = await self._run(
                scripts.QUESTION_PAGE,
                [self.bucket_key(bucket, "idx", "q"), self.bucket_key(bucket, "q")],
                [start, start + self.SCAN_PAGE - 1],
            )
            pages.append((self._names(clients), float(oldest) if oldest is not None else None))
            if examined < self.SCAN_PAGE:
                return pages
            start += self.SCAN_PAGE

    async def orphaned_clients(self, limit: int = 1000) -> list[str]:
        found = await _each_bucket("orphaned clients", {b: self._orphans_in(b) for b in range(self.buckets)})
        return list(dict.fromkeys(c for b in sorted(found) for c in found[b]))[:limit]

    async def _orphans_in(self, b: int) -> list[str]:
        """Clients of bucket b with pending questions and no presence record."""
        candidates = list(dict.fromkeys(cid for clients, _ in await self._question_pages(b) for cid in clients))
        present = await _each(self._call("EXISTS", self.bucket_key(b, "conn", c)) for c in candidates)
        return [client_id for client_id, exists in zip(candidates, present) if not exists]

    async def take_orphaned(self, client_id: str) -> list[Question]:
        cq, q, idx, qs = self._question_keys(client_id)
        records = await self._run(
            scripts.TAKE_ORPHANED, [cq, self.client_key(client_id, "conn", client_id), q, idx, qs], []
        )
        return self._questions(records)

    async def prune_indexes(self, *, remove: bool = True) -> int:
        counts = await _each_bucket("index pruning", {b: self._prune_bucket(b, remove) for b in range(self.buckets)})
        return sum(counts.values())

    async def _prune_bucket(self, b: int, remove: bool) -> int:
        """Index members of bucket b whose record is gone, a page of SCAN_PAGE at a time: the page
        is read, then one script checks (and removes) its members with their records as KEYS."""
        total = 0
        for index in ("seen", "closed"):
            key = self.bucket_key(b, "idx", index)
            start = 0
            while True:
                members = self._names(await self._call("ZRANGE", key, start, start + self.SCAN_PAGE - 1))
                if not members:
                    break
                dead = await self._run(
                    scripts.PRUNE_PRESENCE,
                    [key, *(self.bucket_key(b, "conn", m) for m in members)],
                    [int(remove), *members],
                )
                total += dead
                if len(members) < self.SCAN_PAGE:
                    break
                start += self.SCAN_PAGE - (dead if remove else 0)
        start = 0
        while True:
            examined, dead_q = await self._run(
                scripts.PRUNE_QUESTIONS,
                [self.bucket_key(b, "idx", "q"), self.bucket_key(b, "q")],
                [start, start + self.SCAN_PAGE - 1, int(remove)],
            )
            total += dead_q
            if examined < self.SCAN_PAGE:
                break
            start += self.SCAN_PAGE - (dead_q if remove else 0)
        return total

    async def stats(self) -> StoreStats:
        counts = await _each(
            self._call("ZCARD", self.bucket_key(b, "idx", index))
            for b in range(self.buckets)
            for index in ("seen", "closed", "q")
        )
        open_count = sum(int(c) for c in counts[0::3])
        closed_count = sum(int(c) for c in counts[1::3])
        questions = sum(int(c) for c in counts[2::3])
        oldest: float | None = None
        if questions:
            busy = [b for b in range(self.buckets) if int(counts[3 * b + 2])]
            for pages in await _each(self._question_pages(b) for b in busy):
                for _, found in pages:
                    if found is not None:
                        oldest = found if oldest is None else min(oldest, found)
        return StoreStats(
            open_connections=open_count,
            closed_connections=closed_count,
            questions=questions,
            oldest_asked_at=oldest,
        )

    async def delete_value(self, name: str) -> None:
        await self._call("DEL", self.key("val", name))
