"""The five stress scenarios of the original system, worker side (each worker runs its share).

Each scenario names its phases (points where all workers meet and the orchestrator acts) and its
progress total; :mod:`loadtest.runner` runs them and checks for leaks afterwards.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from chat_ws.codec import Keyword
from loadtest.client import WS_4002_FORGOTTEN, ClientError, SimClient, now_ms
from loadtest.config import StressConfig
from loadtest.soak import soak
from loadtest.worker import Worker, share_of

HANDLER_FAILED = "server error :handler-failed"


@dataclass(frozen=True)
class Scenario:
    """How to run one scenario and how to describe it."""

    name: str
    run: Callable[[Worker], Awaitable[None]]
    phases: Callable[[StressConfig], list[str]]
    total: Callable[[StressConfig], int]  # progress steps over all workers
    clients: Callable[[StressConfig], int]
    operations: Callable[[StressConfig], int]
    operation: str
    primary: str  # latency series of the summary row
    actions: dict[str, str] = field(default_factory=dict)  # phase -> orchestrator action
    active_from: str | None = None  # phase whose end starts the measured window (rates)
    timed: bool = False  # progress by elapsed time (the soak) rather than by steps


# ---------------------------------------------------------------------- concurrent
async def concurrent(w: Worker) -> None:
    """Many clients connected at once, each pinging on its own schedule, then leaving."""
    cfg = w.config
    clients = await w.connect_many(w.share(cfg.concurrent_clients))
    try:
        await w.phase("connected")

        async def pinger(client: SimClient) -> None:
            await asyncio.sleep(random.uniform(0, cfg.ping_interval))  # spread the pings out
            for i in range(cfg.pings):
                if i:
                    await asyncio.sleep(cfg.ping_interval)
                w.result.latency("ping", await client.ping())
                w.result.count("pings")
                w.step()

        await asyncio.gather(*(w.guarded(pinger(c)) for c in clients))
        await w.leave_many(clients)
    finally:
        await w.drop_all(clients)


# ---------------------------------------------------------------------- cycling
async def cycling(w: Worker) -> None:
    """Rapid connect / ping / close-channel cycles, several side by side."""
    cfg = w.config
    todo = w.share(cfg.cycles)

    async def lane() -> None:
        nonlocal todo
        while todo > 0:
            todo -= 1
            began = now_ms()
            client = w.client()
            try:
                await w.connect(client)
                w.result.latency("ping", await client.ping())
                await w.leave(client)
                w.result.latency("cycle", now_ms() - began)
                w.result.count("cycles")
            except ClientError as exc:
                w.result.error(exc.kind, exc.detail)
                await client.abort()
            finally:
                w.step()

    await asyncio.gather(*(lane() for _ in range(w.concurrency(cfg.cycle_concurrency))))


# ---------------------------------------------------------------------- promises
async def promises(w: Worker) -> None:
    """Questions asked through the load-test conversation, answered at once, over many clients."""
    cfg = w.config
    n_clients = w.share(cfg.clients)
    questions = w.share(cfg.questions)
    clients = await w.connect_many(n_clients, progress=False)
    try:
        await w.phase("connected")
        per = [share_of(questions, i, n_clients) for i in range(n_clients)]

        async def converse(client: SimClient, count: int) -> None:
            if count <= 0:
                return
            sent = now_ms()
            await client.start_loadtest(count)
            for _ in range(count):
                _, arrived = await client.next_question()
                w.result.latency("question", arrived - sent)
                sent = now_ms()
                await client.answer()
                w.result.count("answered")
                w.step()
            done = await client.finished()
            if done.get("asked") != count or done.get("answered") != count:
                w.result.error("loadtest mismatch", f"asked {done.get('asked')}, answered {done.get('answered')} of {count}")
            for key in ("p50-ms", "p99-ms"):
                if isinstance(done.get(key), (int, float)):
                    w.result.value("server " + key, float(done[key]))

        await asyncio.gather(*(w.guarded(converse(c, n)) for c, n in zip(clients, per)))
        await w.leave_many(clients, progress=False)
        for client, count in zip(clients, per):
            if client.cleared != count:
                w.result.error("missing clear-promise-keys", f"{client.cleared} of {count}")
    finally:
        await w.drop_all(clients)


# ---------------------------------------------------------------------- bursts
async def bursts(w: Worker) -> None:
    """Bursts of pings sent back to back; every one must be confirmed."""
    cfg = w.config
    n_clients = w.share(cfg.burst_clients)
    size = w.share(cfg.burst_size)
    clients = await w.connect_many(n_clients, progress=False)
    try:
        await w.phase("connected")
        per = [share_of(size, i, max(1, n_clients)) for i in range(n_clients)]

        async def burst(client: SimClient, count: int) -> None:
            sent: list[tuple[float, asyncio.Future[float]]] = []
            for _ in range(count):
                began = now_ms()
                _, future = await client.send_ping()
                sent.append((began, future))
            for began, future in sent:
                w.result.latency("ping", await client.confirmed(future) - began)
                w.result.count("pings")
                w.step()

        for b in range(cfg.bursts):
            await w.phase(f"burst-{b + 1}")
            began = now_ms()
            await asyncio.gather(*(w.guarded(burst(c, n)) for c, n in zip(clients, per)))
            w.result.latency("burst", now_ms() - began)
        await w.leave_many(clients, progress=False)
    finally:
        await w.drop_all(clients)


# ---------------------------------------------------------------------- cleanup
async def cleanup(w: Worker) -> None:
    """Clients with pending questions, forced out by a sweep; each must be closed with 4002."""
    cfg = w.config
    clients = await w.connect_many(w.share(cfg.cleanup_clients), progress=False)
    try:

        async def load(client: SimClient) -> None:
            for _ in range(cfg.pending):
                await client.send(
                    {
                        "dispatch-key": Keyword("start-conversation"),
                        "conversation-id": Keyword("loadtest"),
                        "questions": 1,
                    }
                )
            began = now_ms()
            for _ in range(cfg.pending):
                await client.next_question()
            w.result.latency("pending", now_ms() - began)
            if len(client.p_keys) != cfg.pending:
                w.result.error("pending questions", f"{len(client.p_keys)} distinct of {cfg.pending}")
            w.result.count("pending", len(client.p_keys))
            w.step()

        await w.each(clients, load, w.concurrency(cfg.connect_concurrency))
        # The load-test conversation reports a question rejected by the sweep as a failed handler.
        w.tolerated.add(HANDLER_FAILED)
        await w.phase("loaded")  # the orchestrator runs the forced sweep here

        async def closed(client: SimClient) -> None:
            code = await client.wait_closed()
            w.result.value("closed_at", time.time() if client.closed_wall is None else client.closed_wall)
            if code != WS_4002_FORGOTTEN:
                raise ClientError("unexpected close code", f"{code} after the forced sweep ({client.client_id})")
            w.result.count("swept")
            w.step()

        await asyncio.gather(*(w.guarded(closed(c)) for c in clients))
    finally:
        await w.drop_all(clients)


def _phases_bursts(cfg: StressConfig) -> list[str]:
    return ["connected"] + [f"burst-{b + 1}" for b in range(cfg.bursts)]


SCENARIOS: dict[str, Scenario] = {
    "concurrent": Scenario(
        "concurrent",
        concurrent,
        phases=lambda c: ["connected"],
        total=lambda c: c.concurrent_clients * (2 + c.pings),
        clients=lambda c: c.concurrent_clients,
        operations=lambda c: c.concurrent_clients * c.pings,
        operation="pings",
        primary="ping",
        actions={"connected": "count"},
        active_from="connected",
    ),
    "cycling": Scenario(
        "cycling",
        cycling,
        phases=lambda c: [],
        total=lambda c: c.cycles,
        clients=lambda c: c.cycles,
        operations=lambda c: c.cycles,
        operation="cycles",
        primary="cycle",
    ),
    "promises": Scenario(
        "promises",
        promises,
        phases=lambda c: ["connected"],
        total=lambda c: c.questions,
        clients=lambda c: c.clients,
        operations=lambda c: c.questions,
        operation="questions",
        primary="question",
        active_from="connected",
    ),
    "bursts": Scenario(
        "bursts",
        bursts,
        phases=_phases_bursts,
        total=lambda c: c.bursts * c.burst_size,
        clients=lambda c: c.burst_clients,
        operations=lambda c: c.bursts * c.burst_size,
        operation="pings",
        primary="ping",
        active_from="connected",
    ),
    "cleanup": Scenario(
        "cleanup",
        cleanup,
        phases=lambda c: ["loaded"],
        total=lambda c: 2 * c.cleanup_clients,
        clients=lambda c: c.cleanup_clients,
        operations=lambda c: c.cleanup_clients * c.pending,
        operation="questions",
        primary="sweep-to-close",
        actions={"loaded": "sweep"},
        active_from="loaded",
    ),
}


SOAK = Scenario(
    "soak",
    soak,
    phases=lambda c: [],
    total=lambda c: max(1, int(c.duration)),
    clients=lambda c: c.soak_clients,
    operations=lambda c: 0,
    operation="rounds",
    primary="question",
    timed=True,
)


def scenario(name: str) -> Scenario:
    """The scenario called name (the five originals, or ``soak``)."""
    return SOAK if name == "soak" else SCENARIOS[name]
