"""channels-redis with the shared retry policy, a pool that waits in a burst, and a receive that
costs a future per waiting socket.

Riding out a Redis restart in receive() is ChatConsumer's job (it retries any layer's receive with
the shared backoff), so this layer does not repeat it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import weakref
from typing import Any

from channels_redis.core import RedisChannelLayer as _RedisChannelLayer
from channels_redis.utils import decode_hosts

from chat_ws.redis_policy import retry_options

POOL_SIZE = 1000  # connections per host and event loop (redis-py's default of 100 breaks at 500 clients)
POOL_TIMEOUT = 10.0  # seconds a command waits for a free pooled connection before it fails

logger = logging.getLogger(__name__)


def resilient_hosts(hosts: Any) -> list[dict[str, Any]]:
    """channels-redis host entries with retries on connection errors and a larger pool."""
    entries = []
    for entry in decode_hosts(hosts):
        entry = dict(entry)
        for option, value in retry_options().items():
            entry.setdefault(option, value)
        entry.setdefault("max_connections", POOL_SIZE)
        entries.append(entry)
    return entries


class _Demux:
    """One event loop's receiver of the process's specific channels ("...!local").

    channels-redis serves each waiting ``receive()`` of a specific channel with a queue, two tasks
    and an ``asyncio.wait`` (about 6 KiB per idle socket); here one pump task reads the process's
    Redis list for every receiver, and a waiting receiver costs one future. What channels-redis
    guarantees is kept: messages of one channel in order; a message that arrives while nobody
    waits on its channel is kept for its next receive (at most ``capacity``, the oldest dropped
    first); the pump reads only while someone waits, so with no receiver messages stay in Redis;
    a cancelled read leaves its message in channels-redis's backup queue; a failed read fails
    every waiting receive with its error. Kept messages nobody asked for within ``expiry`` (their
    socket is gone) are dropped.
    """

    clock = staticmethod(time.monotonic)

    def __init__(self, layer: RedisChannelLayer, real_channel: str) -> None:
        self.layer = layer
        self.real_channel = real_channel
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.kept: dict[str, collections.deque[tuple[float, dict[str, Any]]]] = {}
        self.pump: asyncio.Task[None] | None = None
        self.pruned_at = self.clock()

    async def receive(self, channel: str) -> dict[str, Any]:
        kept = self.kept.get(channel)
        if kept:
            message = kept.popleft()[1]
            if not kept:
                del self.kept[channel]
            return message
        if channel in self.waiting:
            raise RuntimeError(f"two receivers wait on channel {channel}")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[channel] = future
        if self.pump is None:
            self.pump = asyncio.create_task(self._pump(), name="chat_ws:layer-receive")
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # it arrived as we were cancelled: keep it
                self.kept.setdefault(channel, self._queue()).appendleft((self.clock(), future.result()))
            raise
        finally:
            if self.waiting.get(channel) is future:
                del self.waiting[channel]
            if not self.waiting and self.pump is not None:
                self.pump.cancel()  # nobody listens: what comes next waits in Redis
                self.pump = None

    def _queue(self) -> collections.deque[tuple[float, dict[str, Any]]]:
        return collections.deque(maxlen=self.layer.capacity)

    async def _pump(self) -> None:
        """Read while anyone waits; stop when nobody does (the next receive starts a new pump)."""
        try:
            while self.waiting:
                target, message = await self.layer.receive_single(self.real_channel)
                for channel in target if isinstance(target, list) else (target,):
                    self._hand(channel, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(exc)
        finally:
            if self.pump is asyncio.current_task():
                self.pump = None

    def _hand(self, channel: str, message: dict[str, Any]) -> None:
        future = self.waiting.pop(channel, None)
        if future is not None and not future.done():
            future.set_result(message)
            return
        now = self.clock()
        self.kept.setdefault(channel, self._queue()).append((now, message))
        if now - self.pruned_at >= self.layer.expiry:
            self._prune(now)

    def _prune(self, now: float) -> None:
        self.pruned_at = now
        stale = [c for c, kept in self.kept.items() if now - kept[-1][0] >= self.layer.expiry]
        for channel in stale:
            del self.kept[channel]
        if stale:
            logger.debug("dropped messages of %d channel(s) nobody received within %ss", len(stale), self.layer.expiry)


class RedisChannelLayer(_RedisChannelLayer):
    """channels_redis.core.RedisChannelLayer that survives a Redis restart, with a cheaper receive,
    sharded correctly over several hosts.

    Stale pooled connections are retried instead of failing the first command after a restart, and
    a burst of commands waits for a free pooled connection. Messages sent while Redis was down are
    lost, as with any non-persistent Redis. Receiving on the process's specific channels goes
    through one pump per event loop (see ``_Demux``); other channels as in channels-redis.
    """

    def __init__(self, hosts: Any = None, **kwargs: Any) -> None:
        super().__init__(hosts=resilient_hosts(hosts), **kwargs)
        self._demuxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Demux] = weakref.WeakKeyDictionary()

    async def receive(self, channel: str) -> dict[str, Any]:
        """The next message of channel; for a specific channel through this loop's demux."""
        if "!" not in channel:
            return await super().receive(channel)
        assert self.require_valid_channel_name(channel)
        real_channel = self.non_local_name(channel)
        assert real_channel.endswith(self.client_prefix + "!"), "Wrong client prefix"
        loop = asyncio.get_running_loop()
        demux = self._demuxes.get(loop)
        if demux is None:
            demux = self._demuxes[loop] = _Demux(self, real_channel)
        return await demux.receive(channel)

    def consistent_hash(self, value: str | bytes) -> int:
        """The host of a channel or group; for a specific channel ("...!local"), the host of its
        process's channel ("...!"). channels-redis sends to the host of the full name and receives
        from the host of the process's name, so with several hosts most messages to specific
        channels land where nobody reads them (django/channels#1492). Group names cannot
        contain "!", so groups hash as before."""
        if isinstance(value, str) and "!" in value:
            value = value[: value.index("!") + 1]
        return int(super().consistent_hash(value))

    def create_pool(self, index: int) -> Any:
        """A pool that makes a command wait for a free connection when all POOL_SIZE are busy
        (a burst of connects), where channels-redis's own pool fails it: 'Too many connections'."""
        host = dict(self.hosts[index])
        if "address" not in host:
            return super().create_pool(index)
        from redis.asyncio import BlockingConnectionPool

        return BlockingConnectionPool.from_url(host.pop("address"), timeout=POOL_TIMEOUT, **host)
