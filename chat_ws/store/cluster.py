"""Redis Cluster for the store's hot path: one auto-pipelined connection per master, routed by slot.

The store's calls name their key first (a script its first key), and all keys of one call share a
slot (chat_ws.store.scripts), so a call goes to exactly one master. This module keeps the slot map
(``CLUSTER SLOTS``, read from the seed node or any node it has met), follows ``MOVED`` (the slot
has moved: remember the new owner, refresh the map in the background) and ``ASK`` (the slot is
migrating: send ``ASKING`` and the command to the named node, once), retries ``TRYAGAIN`` and
``CLUSTERDOWN`` a few times with backoff, and loads scripts a node does not know.

Per node, calls go through :class:`chat_ws.store.resp.RespConnection`, so each master gets the
hot path's pipelining, deadlines and in-flight bound. redis-py's ``RedisCluster`` is the reference
this module is tested against; it costs tens of microseconds of client CPU per call (see
docs/benchmarks.md), which is why the hot path does not use it.

A call that fails because a node is unreachable raises StoreUnavailable and marks the map stale:
the next call reads the map again, so a failover is followed once the cluster has promoted a
replica. Calls are not retried after a connection loss, since a script may already have run.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from redis.crc import key_slot

from chat_ws.exceptions import ConfigurationError, StoreUnavailable
from chat_ws.store.resp import Address, ReplyError, RespConnection, Script, SharedAttempt

logger = logging.getLogger(__name__)

SLOTS = 16384
MAX_REDIRECTS = 5  # MOVED/ASK replies followed for one call before it fails
RETRY_DELAY = 0.05  # seconds before the first retry of TRYAGAIN/CLUSTERDOWN; doubles each time
MAX_RETRY_DELAY = 0.5  # seconds between retries at most (they go on until the call's deadline)
REFRESH_EVERY = 1.0  # seconds between background reads of the slot map at most


def slot_of(key: str | bytes) -> int:
    """The hash slot of a key (hash tags honoured), as Redis Cluster computes it."""
    return int(key_slot(key.encode() if isinstance(key, str) else key))


def _node_name(host: str, port: int) -> str:
    return f"{host}:{port}"


class ClusterConnection:
    """The store's pipelined connections to the masters of one Redis Cluster (per event loop).

    Same calling interface as RespConnection: ``call(*args)`` routes by ``args[1]`` (the key or
    channel; keyless commands go to any master), ``evalsha(script, keys, args)`` by ``keys[0]``.
    """

    def __init__(
        self, url: str, *, timeout: float = 10.0, max_in_flight: int = 10_000, connect_timeout: float = 5.0
    ) -> None:
        self.seed = Address(url)
        if self.seed.db:
            raise ConfigurationError("Redis Cluster has only database 0; drop the database from REDIS_URL")
        self.url = url
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.connect_timeout = connect_timeout
        self.loop = asyncio.get_running_loop()
        self._nodes: dict[str, RespConnection] = {}
        self._slots: list[str | None] | None = None
        self._masters: list[str] = []
        self._known: list[str] = [_node_name(self.seed.host, self.seed.port)]
        self._refreshing: SharedAttempt[list[str | None]] = SharedAttempt(self.loop, "reading the cluster's slot map")
        self._refreshed_at = 0.0
        self._closed = False
        self.refreshes = 0  # slot maps read so far

    # ------------------------------------------------------------------ nodes
    def node(self, name: str) -> RespConnection:
        """The pipelined connection to one node ("host:port"), made on first use."""
        conn = self._nodes.get(name)
        if conn is None:
            if self._closed:
                raise StoreUnavailable("the Redis connection is closed")
            conn = self._nodes[name] = RespConnection(
                self.node_url(name),
                timeout=self.timeout,
                max_in_flight=self.max_in_flight,
                connect_timeout=self.connect_timeout,
            )
        return conn

    def node_url(self, name: str) -> str:
        """A URL for one node, with the seed's scheme, credentials and TLS options."""
        host, _, port = name.rpartition(":")
        return self.seed.with_endpoint(host, int(port))

    async def masters(self) -> list[str]:
        """The masters of the current slot map, in slot order."""
        await self._slot_map()
        return list(self._masters)

    async def node_for(self, key: str) -> str:
        """The master that owns key's slot."""
        return self._owner(await self._slot_map(), slot_of(key))

    @staticmethod
    def _owner(slots: list[str | None], slot: int) -> str:
        name = slots[slot]
        if name is None:
            raise StoreUnavailable(f"no Redis Cluster master serves slot {slot}")
        return name

    # ------------------------------------------------------------------ the slot map
    async def _slot_map(self) -> list[str | None]:
        if self._slots is not None:
            return self._slots
        return await self.refresh()

    async def refresh(self) -> list[str | None]:
        """Read the slot map (one read at a time; concurrent callers share it)."""
        if self._closed:
            raise StoreUnavailable("the Redis connection is closed")
        return await self._refreshing.run(self._read_map)

    async def _read_map(self) -> list[str | None]:
        """Ask every known node at once; the first complete map wins, else the first partial one
        (its uncovered slots fail their calls), so one silent node does not hold the others up."""
        self._refreshed_at = time.monotonic()
        names = list(dict.fromkeys(self._known))
        calls = {
            asyncio.ensure_future(self.node(n).call("CLUSTER", "SLOTS", timeout=self.connect_timeout)): n
            for n in names
        }
        errors: list[str] = []
        partial: list[str | None] | None = None
        pending = set(calls)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    exc = future.exception()
                    if exc is not None:
                        errors.append(f"{calls[future]}: {exc}")
                        continue
                    slots = self._parse(future.result(), calls[future])
                    if None not in slots:
                        return self._use(slots)
                    partial = partial or slots
        finally:
            for future in calls:
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # read: a node that failed is in errors or does not matter
        if partial is not None and any(partial):
            logger.warning("the Redis Cluster does not cover all %d slots; calls to the others fail", SLOTS)
            return self._use(partial)
        self._slots = None
        raise StoreUnavailable("no Redis Cluster node gave a slot map: " + "; ".join(errors))

    def _use(self, slots: list[str | None]) -> list[str | None]:
        self._slots = slots
        self._masters = [n for n in dict.fromkeys(slots) if n is not None]
        self._known = [*self._masters, *(n for n in self._known if n not in self._masters)]
        self.refreshes += 1
        logger.debug("Redis Cluster slot map: %d masters", len(self._masters))
        return slots

    @staticmethod
    def _parse(reply: list[Any], asked: str) -> list[str | None]:
        slots: list[str | None] = [None] * SLOTS
        asked_host = asked.rpartition(":")[0]
        for entry in reply:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0] or "")
            if host in ("", "?"):
                host = asked_host  # the node does not know its own address: the one we asked
            name = _node_name(host, int(master[1]))
            slots[start : end + 1] = [name] * (end - start + 1)
        return slots

    def _stale(self) -> None:
        """The map is out of date: read it again in the background, at most once per
        REFRESH_EVERY seconds; calls go on with the map they have meanwhile."""
        if not self._refreshing.running and not self._closed and time.monotonic() - self._refreshed_at >= REFRESH_EVERY:
            task = asyncio.ensure_future(self.refresh())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # ------------------------------------------------------------------ calls
    async def call(self, *args: Any, timeout: float | None = None) -> Any:
        """Send one command to the master of ``args[1]``'s slot; return its reply."""
        return await self._execute(args[1] if len(args) > 1 else None, args, timeout, None)

    async def evalsha(self, script: Script, keys: list[Any], args: list[Any], *, timeout: float | None = None) -> Any:
        """Run a script on the master of its keys' slot, loading it there first when needed."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        return await self._execute(keys[0] if keys else None, command, timeout, script)

    async def call_node(self, name: str, *args: Any, timeout: float | None = None) -> Any:
        """One command on one named node (health probes, statistics)."""
        return await self.node(name).call(*args, timeout=timeout)

    async def _execute(self, key: Any, args: tuple[Any, ...], timeout: float | None, script: Script | None) -> Any:
        slots = await self._slot_map()
        name = self._owner(slots, slot_of(key)) if key is not None else random.choice(self._masters)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        asking, redirects, retries = False, 0, 0
        while True:
            conn = self.node(name)
            left = max(0.001, deadline - time.monotonic())
            try:
                if asking:
                    return await conn.call_asking(args, timeout=left)
                return await conn.call(*args, timeout=left)
            except StoreUnavailable:
                self._stale()  # a master may have failed over: the map is read again
                raise
            except ReplyError as exc:
                text = str(exc)
                kind = text.split(" ", 1)[0]
                if kind in ("MOVED", "ASK"):
                    redirects += 1
                    if redirects > MAX_REDIRECTS:
                        raise StoreUnavailable(f"Redis Cluster redirected one call more than {MAX_REDIRECTS} times") from exc
                    slot, name = self._redirect(text, name)
                    asking = kind == "ASK"
                    if kind == "MOVED":
                        slots[slot] = name
                        self._stale()
                elif kind in ("TRYAGAIN", "CLUSTERDOWN"):
                    # TRYAGAIN: a multi-key call meets a slot in migration; retried until its deadline
                    delay = min(RETRY_DELAY * 2**retries, MAX_RETRY_DELAY)
                    if time.monotonic() + delay >= deadline:
                        raise StoreUnavailable(f"Redis Cluster is not ready: {text}") from exc
                    retries += 1
                    await asyncio.sleep(delay)
                    if kind == "CLUSTERDOWN":
                        slots = await self.refresh()
                        name = self._owner(slots, slot_of(key)) if key is not None else random.choice(self._masters)
                        asking = False
                elif kind == "NOSCRIPT" and script is not None:
                    await conn.call("SCRIPT", "LOAD", script.source, timeout=left)
                else:
                    raise

    @staticmethod
    def _redirect(text: str, asked: str) -> tuple[int, str]:
        """Slot and node of a ``MOVED <slot> <host>:<port>`` or ``ASK ...`` reply (an empty host
        means the host of the node asked)."""
        _, slot, where = text.split(" ")[:3]
        host, _, port = where.rpartition(":")
        return int(slot), f"{host or asked.rpartition(':')[0]}:{port}"

    # ------------------------------------------------------------------ closing
    def in_flight(self) -> int:
        """Commands sent and not yet answered, over all nodes."""
        return sum(conn.in_flight() for conn in self._nodes.values())

    def abort(self) -> None:
        """Drop every node connection at once (fault injection); the next calls reconnect."""
        for conn in self._nodes.values():
            conn.abort()

    @property
    def connects(self) -> int:
        """Connections made so far over all nodes."""
        return sum(conn.connects for conn in self._nodes.values())

    async def close(self) -> None:
        """Close every node connection; outstanding calls fail with StoreUnavailable."""
        self._closed = True
        await asyncio.gather(*(conn.close() for conn in self._nodes.values()))
