"""Running the sweep: the long-running sweeper, its heartbeat, and entry points for sync code."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from chat_ws import promises, sessions
from chat_ws.conf import get_settings
from chat_ws.exceptions import StoreUnavailable
from chat_ws.store import get_store
from chat_ws.sweep import SweepReport, sweep

logger = logging.getLogger(__name__)

T = TypeVar("T")

HEARTBEAT = "sweep:heartbeat"  # store value: JSON of the running sweeper, while it runs


def heartbeat_ttl(interval: float) -> float:
    """Seconds a heartbeat lasts: three missed passes, plus one pass's lock, mean no sweeper."""
    return 3 * interval + float(get_settings()["SWEEP_LOCK_TTL"])


async def heartbeat(ttl: float, source: str) -> None:
    """Record that a sweeper runs; health reports it until ``ttl`` seconds pass without a beat."""
    beat = {"source": source, "server_id": promises.server_id(), "pid": os.getpid(), "at": time.time()}
    await get_store().set_value(HEARTBEAT, json.dumps(beat), ttl)


async def sweeper() -> dict[str, Any] | None:
    """The heartbeat of a running sweeper, or None."""
    raw = await get_store().get_value(HEARTBEAT)
    return json.loads(raw) if raw else None


async def run(
    interval: float, stop: asyncio.Event, on_pass: Callable[[SweepReport], None] | None = None
) -> int:
    """Sweep every ``interval`` seconds until ``stop`` is set; return how many passes ran.

    A failed pass (a Redis outage, say) is logged and retried next interval, so the sweeper
    outlives Redis restarts. Setting ``stop`` lets the current pass finish.
    """
    passes = 0
    while not stop.is_set():
        try:
            await heartbeat(heartbeat_ttl(interval), "loop")
            report = await sweep()
        except StoreUnavailable as exc:
            logger.error("sweep failed: %s", exc)
        except Exception:
            logger.exception("sweep failed; trying again in %gs", interval)
        else:
            passes += 1
            if on_pass is not None:
                on_pass(report)
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass
    try:
        await get_store().delete_value(HEARTBEAT)
    except StoreUnavailable:
        logger.warning("could not clear the sweeper heartbeat; it lapses by itself")
    logger.info("sweeper stopped after %d pass(es)", passes)
    return passes


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine in a fresh event loop, then write the session rows it queued and close the
    store's connections of that loop.

    For management commands and Celery workers; not for code already inside an event loop.
    """

    async def main() -> T:
        try:
            return await factory()
        finally:
            try:
                await sessions.flush()  # session closes the pass queued (forgotten clients) are written
            finally:
                await get_store().close()

    return asyncio.run(main())
