"""Redis connections of the Redis store, per event loop: the pipelined connection of the hot path
(one server, or one per master of a Redis Cluster), a redis-py client for the settlement listener's
pub/sub, and that listener.

On Redis Cluster the listener uses sharded pub/sub (``SSUBSCRIBE`` on the master that owns the
channel's slot; Redis >= 7): a notice goes to that one shard, where plain ``PUBLISH`` is copied to
every node of the cluster. When the slot moves, the node ends the subscription (``sunsubscribe``)
and the listener subscribes again on the new owner.

Connections belong to the loop that made them; async_to_sync (admin, commands, Celery) makes
short-lived loops, so each loop gets its own, closed with the loop. This is the one module that
opens Redis connections for the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from typing import Any

import redis.asyncio as aioredis

from chat_ws.exceptions import StoreUnavailable
from chat_ws.redis_policy import network_errors, reconnect_delay, retry_options
from chat_ws.store.base import SettlementCallback
from chat_ws.store.cluster import ClusterConnection
from chat_ws.store.resp import RespConnection

logger = logging.getLogger(__name__)

NETWORK_ERRORS = network_errors()
SUBSCRIBE_ERRORS: tuple[type[BaseException], ...] = (asyncio.TimeoutError, *NETWORK_ERRORS)
LISTEN_ERRORS: tuple[type[BaseException], ...] = (StoreUnavailable, *NETWORK_ERRORS)
PING_EVERY = 5.0  # seconds between the settlement listener's pings while no notice comes
SILENCE_LIMIT = 15.0  # seconds without any reply after which the listener takes Redis as gone
LISTEN_TICK = 1.0  # seconds one wait for a notice lasts at most


class LoopState:
    """The connections and settlement listener of one event loop."""

    def __init__(self, url: str, pool_size: int, timeout: float, max_in_flight: int, cluster: bool) -> None:
        self.fast: RespConnection | ClusterConnection
        if cluster:
            self.fast = ClusterConnection(url, timeout=timeout, max_in_flight=max_in_flight)
        else:
            self.fast = RespConnection(url, timeout=timeout, max_in_flight=max_in_flight)
        self.url = url
        self.pool_size = pool_size
        self.client = self._client(url)
        self.listener: asyncio.Task[None] | None = None

    @property
    def cluster(self) -> bool:
        """Whether the store is on a Redis Cluster (notices by sharded pub/sub)."""
        return isinstance(self.fast, ClusterConnection)

    def _client(self, url: str) -> aioredis.Redis:
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=self.pool_size,
            timeout=10,
            health_check_interval=30,
            **retry_options(),
        )
        return aioredis.Redis(connection_pool=pool)

    async def pubsub_client(self, channel: str) -> aioredis.Redis:
        """The redis-py client to subscribe to channel with: on a cluster, one for the master
        that owns the channel's slot (replacing the previous one)."""
        if not isinstance(self.fast, ClusterConnection):
            return self.client
        await self.fast.refresh()  # (re)subscribing: the channel's slot may have moved
        node = self.fast.node_url(await self.fast.node_for(channel))
        if self.url != node:
            await self.client.aclose()
            self.url, self.client = node, self._client(node)
        return self.client

    async def close(self) -> None:
        """Stop the listener and close the connections."""
        if self.listener is not None:
            self.listener.cancel()
            try:
                await self.listener
            except (asyncio.CancelledError, Exception):
                pass
        await self.fast.close()
        await self.client.aclose()
        await self.client.connection_pool.disconnect()


class LoopConnections:
    """A LoopState per running event loop."""

    def __init__(self, url: str, pool_size: int, timeout: float, max_in_flight: int, cluster: bool = False) -> None:
        self.url = url
        self.cluster = cluster
        self.pool_size = pool_size
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def state(self) -> LoopState:
        """The running loop's state, made on first use."""
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = LoopState(
                self.url, self.pool_size, self.timeout, self.max_in_flight, self.cluster
            )
            self._close_with_loop(loop)
        return state

    def _close_with_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close this loop's connections when the loop closes, as channels-redis does."""
        original = loop.close
        owner = weakref.ref(self)

        def close(*args: Any, **kwargs: Any) -> None:
            found = owner()
            if found is not None and loop in found._loops and not loop.is_running():
                try:
                    loop.run_until_complete(found._loops.pop(loop).close())
                except Exception:  # closing is best effort; the loop is going away anyway
                    logger.debug("could not close Redis connections of a closing loop", exc_info=True)
            loop.close = original  # type: ignore[method-assign]
            original(*args, **kwargs)

        loop.close = close  # type: ignore[method-assign]

    async def close(self) -> None:
        """Close the running loop's connections and listener."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.close()

    async def subscribe(self, channel: str, callback: SettlementCallback) -> None:
        """Deliver the channel's messages to callback from a listener task (idempotent per loop)."""
        state = self.state()
        if state.listener is not None and not state.listener.done():
            return
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.listener = asyncio.create_task(self._listen(state, channel, callback, ready))
        try:
            await asyncio.wait_for(asyncio.shield(ready), timeout=10)
        except SUBSCRIBE_ERRORS as exc:
            state.listener.cancel()
            state.listener = None
            raise StoreUnavailable(f"cannot subscribe to settlements: {exc}") from exc

    @staticmethod
    async def _listen(
        state: LoopState, channel: str, callback: SettlementCallback, ready: asyncio.Future[None]
    ) -> None:
        failures = 0
        while True:
            pubsub: Any = None
            try:
                client = await state.pubsub_client(channel)
                pubsub = client.pubsub()
                if state.cluster:
                    await pubsub.ssubscribe(channel)
                else:
                    await pubsub.subscribe(channel)
                if not ready.done():
                    ready.set_result(None)
                elif failures:
                    logger.info("settlement listener re-subscribed to %s", channel)
                    await _call(callback, {"event": "resubscribed"})
                failures = 0
                await _receive(pubsub, channel, callback)
            except asyncio.CancelledError:
                raise
            except LISTEN_ERRORS as exc:
                if not ready.done():
                    ready.set_exception(exc)
                    return
                delay = reconnect_delay(failures)
                failures += 1
                logger.warning("settlement listener lost Redis (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
            except Exception:
                logger.exception("settlement listener failed; restarting")
                failures += 1
                await asyncio.sleep(reconnect_delay(failures))
            finally:
                try:
                    if pubsub is not None:
                        await pubsub.aclose()
                except Exception:  # the connection may already be gone
                    pass


async def _receive(pubsub: Any, channel: str, callback: SettlementCallback) -> None:
    """Hand the subscription's messages to callback until it ends. A PING every PING_EVERY
    seconds: a server that has answered nothing, not even the pings, for SILENCE_LIMIT seconds is
    taken as gone (a host lost without a reset leaves the socket open and silent)."""
    loop = asyncio.get_running_loop()
    heard = pinged = loop.time()
    while True:
        item = await pubsub.get_message(timeout=min(LISTEN_TICK, PING_EVERY))
        now = loop.time()
        if item is not None:
            heard = now
            kind = item.get("type")
            if kind in ("message", "smessage"):
                await _call(callback, json.loads(item["data"]))
            elif kind in ("unsubscribe", "sunsubscribe"):  # the slot moved to another master
                raise StoreUnavailable(f"the subscription to {channel} ended ({kind})")
        elif now - heard > SILENCE_LIMIT:
            raise StoreUnavailable(f"Redis answered nothing for {SILENCE_LIMIT:g}s")
        if now - pinged >= PING_EVERY:
            await pubsub.ping()
            pinged = now


async def _call(callback: SettlementCallback, event: dict[str, Any]) -> None:
    result = callback(event)
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        await result
