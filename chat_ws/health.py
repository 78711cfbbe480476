"""The health report: what the store holds, whether the backends answer, whether sweeps run."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from chat_ws import delivery, dispatch, presence, promises, sweeper
from chat_ws import sweep as sweeping
from chat_ws.conf import get_settings
from chat_ws.runtime import runtime
from chat_ws.store import get_store

logger = logging.getLogger(__name__)

T = TypeVar("T")

PROBE_GROUP = "chat_ws.health"  # channel-layer group nobody joins; sending to it probes the layer
OVERDUE_FACTOR = 3  # a sweep is overdue after this many SWEEP_INTERVALs without one


@dataclass
class HealthReport:
    """The state of chat_ws as seen from this process."""

    healthy: bool
    store: bool  # the promise/presence store answers (at least part of it)
    channel_layer: bool  # the channel layer answers
    active_clients: int | None = None  # connected clients (all processes)
    disconnected_clients: int | None = None  # clients within their reconnect grace
    ping_records: int | None = None  # presence records in the store
    pending_questions: int | None = None
    oldest_question_age: float | None = None  # seconds
    last_sweep_at: float | None = None  # unix seconds
    last_sweep_age: float | None = None  # seconds
    last_sweep: dict[str, Any] | None = None  # the last pass's report
    sweeper_running: bool = False  # a `chat_ws_sweep --loop` or Celery sweeper beat recently
    sweep_overdue: bool = True  # no sweep within OVERDUE_FACTOR x SWEEP_INTERVAL
    server_id: str = ""  # this process
    local_sockets: int = 0  # websockets this process serves
    waiting_askers: int = 0  # ask() calls waiting in this process
    grace_timers: int = 0  # reconnect-grace timers running in this process
    handler_tasks: int = 0  # handler tasks running in this process (interviews waiting, ...)
    store_degraded: bool = False  # some of the store's servers (cluster masters) do not answer
    store_nodes: list[dict[str, Any]] | None = None  # per Redis server (cluster master): node, keys, commands, error
    layer_hosts: int | None = None  # Redis servers the channel layer shards over (all answered)
    stopping: bool = False  # this process got SIGTERM and refuses new sockets (graceful shutdown)
    problems: list[str] = field(default_factory=list)
    checked_at: float = 0.0  # unix seconds

    def as_dict(self, *, counts: bool = True) -> dict[str, Any]:
        """JSON-ready; without ``counts`` only the verdict and the backends' state."""
        if not counts:
            return {"healthy": self.healthy, "store": self.store, "channel_layer": self.channel_layer}
        return asdict(self)


async def _probe(awaitable: Awaitable[T], timeout: float, what: str, problems: list[str]) -> T | None:
    """Await with a bound; record a problem and return None when it fails or hangs."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        problems.append(f"{what}: no answer within {timeout:g}s")
    except Exception as exc:
        problems.append(f"{what}: {type(exc).__name__}: {exc}")
    return None


async def _store_state(counts: bool) -> tuple[Any, ...]:
    store = get_store()
    whole = await store.check()
    stats = store.stats() if counts and whole else _nothing()  # partial counts would mislead
    nodes = store.nodes() if counts else _nothing()
    found = await asyncio.gather(stats, nodes, sweeping.last_sweep(), sweeper.sweeper(), return_exceptions=True)
    failed = [r for r in found if isinstance(r, BaseException)]
    if failed and whole:
        raise failed[0]
    # with part of a cluster down, what lives on the missing masters is reported as unknown
    return (whole, *(None if isinstance(r, BaseException) else r for r in found))


async def _nothing() -> None:
    return None


async def _layer_state() -> int | None:
    """Probe the layer; for a Redis layer ping every host it shards over and return how many."""
    layer = delivery.layer()
    await layer.group_send(PROBE_GROUP, {"type": "chat_ws.health"})
    hosts = getattr(layer, "ring_size", None)
    connection = getattr(layer, "connection", None)
    if not isinstance(hosts, int) or connection is None:
        return 0
    await asyncio.gather(*(connection(index).ping() for index in range(hosts)))
    return hosts


async def health(*, now: float | None = None, counts: bool = True) -> HealthReport:
    """Check the store and the channel layer and collect the counts; never raises.

    ``counts=False`` skips counting clients and questions (a cheap probe for load balancers).
    """
    conf = get_settings()
    now = time.time() if now is None else now
    timeout = float(conf["HEALTH_TIMEOUT"])
    problems: list[str] = []
    state, layer_ok = await asyncio.gather(
        _probe(_store_state(counts), timeout, "store", problems),
        _probe(_layer_state(), timeout, "channel layer", problems),
    )
    report = HealthReport(
        healthy=False,
        store=state is not None,
        channel_layer=layer_ok is not None,
        layer_hosts=layer_ok or None,
        server_id=promises.server_id(),
        local_sockets=delivery.local_count(),
        waiting_askers=promises.waiting_here(),
        grace_timers=presence.pending_grace_timers(),
        handler_tasks=dispatch.running_tasks(),
        problems=problems,
        checked_at=now,
    )
    if state is not None:
        whole, stats, nodes, last, beat = state
        if not whole:
            # served where it answers; every process sees the same, so the verdict stays healthy
            report.store_degraded = True
            problems.append("store: some Redis servers do not answer")
        if nodes:
            report.store_nodes = [asdict(n) for n in nodes]
            problems.extend(f"store node {n.node}: {n.error}" for n in nodes if n.error)
        if stats is not None:
            report.active_clients = stats.open_connections
            report.disconnected_clients = stats.closed_connections
            report.ping_records = stats.open_connections + stats.closed_connections
            report.pending_questions = stats.questions
            if stats.oldest_asked_at is not None:
                report.oldest_question_age = max(0.0, now - stats.oldest_asked_at)
        if last is not None:
            report.last_sweep = last
            report.last_sweep_at = float(last["started_at"])
            report.last_sweep_age = max(0.0, now - report.last_sweep_at)
        report.sweeper_running = beat is not None
    overdue_after = OVERDUE_FACTOR * float(conf["SWEEP_INTERVAL"])
    report.sweep_overdue = report.last_sweep_age is None or report.last_sweep_age > overdue_after
    if report.sweep_overdue and conf["HEALTH_REQUIRE_SWEEP"]:
        problems.append(f"no sweep within {overdue_after:g}s")
    report.stopping = runtime().stopping
    if report.stopping:
        problems.append("this process is stopping (graceful shutdown)")
    report.healthy = (
        report.store
        and report.channel_layer
        and not report.stopping
        and not (report.sweep_overdue and conf["HEALTH_REQUIRE_SWEEP"])
    )
    if not report.healthy:
        logger.warning("chat_ws unhealthy: %s", "; ".join(problems))
    return report
