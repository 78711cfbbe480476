"""Running scenarios: workers in a thread or in processes, their phases, progress and leak check."""

from __future__ import annotations

import logging
import multiprocessing
import queue
import secrets
import threading
import time
from typing import Any

from devtools.processes import raise_fd_limit
from loadtest.config import SCENARIOS as NAMES
from loadtest.config import StressConfig
from loadtest.progress import ProgressBar
from loadtest.report import ScenarioReport, StressReport, WorkerResult
from loadtest.scenarios import Scenario, scenario
from loadtest.server import LeakCheckUnavailable, fetch_leaks, run_sweep, settle_leaks
from loadtest.soak import MemorySampler
from loadtest.worker import Worker, run_worker, share_of

logger = logging.getLogger(__name__)

FD_MARGIN = 200  # open files a generator needs besides its sockets
PHASE_WAIT = 3600.0  # seconds the orchestrator waits for the workers at a phase
POLL = 0.1  # seconds between progress redraws and liveness checks of the workers


def run(config: StressConfig, progress: ProgressBar | None = None) -> StressReport:
    """Run the configured scenarios one after the other against a live server."""
    if config.processes < 1:
        raise ValueError("processes must be at least 1")
    unknown = [s for s in config.scenarios if s not in (*NAMES, "soak")]
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(unknown)}")
    if not config.run_id:
        config.run_id = secrets.token_hex(4)
    progress = progress or ProgressBar(enabled=False)
    report = StressReport(run_id=config.run_id, url=config.url, processes=config.processes)
    for name in config.scenarios:
        report.scenarios.append(run_scenario(config, name, progress))
    return report


def _worker_process(
    config: StressConfig, name: str, index: int, count: int, progress: Any, barrier: Any, results: Any
) -> None:
    worker = Worker(config, name, index, count, progress, barrier)
    results.put((index, run_worker(worker, scenario(name).run)))


def _biggest_share(config: StressConfig, spec: Scenario) -> int:
    clients = spec.clients(config)
    return clients // config.processes + 1


class _Orchestrator:
    """The parent side of one scenario: phases and their actions, run in a thread."""

    def __init__(self, config: StressConfig, spec: Scenario, report: ScenarioReport, barrier: Any) -> None:
        self.config = config
        self.spec = spec
        self.report = report
        self.barrier = barrier
        self.errors = WorkerResult()
        self.active_since: float | None = None
        self.thread = threading.Thread(target=self._run, name=f"stress-{spec.name}", daemon=True)

    def _run(self) -> None:
        try:
            for phase in self.spec.phases(self.config):
                self.barrier.wait(PHASE_WAIT)
                action = self.spec.actions.get(phase)
                try:
                    if action == "count":
                        self._count()
                    elif action == "sweep":
                        self._sweep()
                finally:
                    self.barrier.wait(PHASE_WAIT)
                if phase == self.spec.active_from:
                    self.active_since = time.monotonic()
        except threading.BrokenBarrierError:
            pass  # a worker failed; it recorded why

    def _count(self) -> None:
        try:
            self.report.extra["held_at_peak"] = fetch_leaks(self.config, self.report.prefix)["clients"]
        except LeakCheckUnavailable as exc:
            self.report.notes.append(f"could not count clients at the peak: {exc}")

    def _sweep(self) -> None:
        config = self.config
        workers = config.processes
        ids = [  # as Worker.new_id names the cleanup clients, in the order they were created
            f"{self.report.prefix}{i}-{serial}"
            for i in range(workers)
            for serial in range(1, share_of(config.cleanup_clients, i, workers) + 1)
        ]
        outcome = run_sweep(config, ids)
        self.report.extra["sweep"] = {
            "ok": outcome.ok,
            "seconds": round(outcome.duration, 3),
            "started_at": outcome.started_at,
            "forced": outcome.forced,
            "rejected": outcome.rejected,
            "output": outcome.output[-3:],
        }
        if not outcome.ok:
            self.errors.error("sweep failed", (outcome.output or [""])[-1][-300:])


def run_scenario(config: StressConfig, name: str, progress: ProgressBar) -> ScenarioReport:
    """Run one scenario with ``config.processes`` workers, then check the server for leftovers."""
    spec = scenario(name)
    report = ScenarioReport(
        name=name,
        prefix=config.prefix(name),
        clients=spec.clients(config),
        operations=spec.operations(config),
        operation=spec.operation,
        primary=spec.primary,
    )
    count = config.processes
    soft, hard = raise_fd_limit(_biggest_share(config, spec) + FD_MARGIN)
    if soft < _biggest_share(config, spec) + FD_MARGIN:
        report.notes.append(f"open-files limit {soft} (hard {hard}) is low for this share; use --processes")
    sampler = None
    if name == "soak":
        if config.server_pid:
            sampler = MemorySampler(config.server_pid, config.sample_interval)
        else:
            report.notes.append("server memory not sampled (no --server-pid)")
    if count == 1:
        barrier: Any = threading.Barrier(2)
        counters: Any = [0]
        results: Any = queue.Queue()
        thread = threading.Thread(
            target=lambda: results.put((0, run_worker(Worker(config, name, 0, 1, counters, barrier), spec.run))),
            name=f"stress-worker-{name}",
            daemon=True,
        )
        workers: list[Any] = [thread]
    else:
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(count + 1)
        counters = ctx.Array("q", count, lock=False)
        results = ctx.Queue()
        workers = [
            ctx.Process(
                target=_worker_process,
                args=(config, name, i, count, counters, barrier, results),
                name=f"stress-worker-{name}-{i}",
                daemon=True,
            )
            for i in range(count)
        ]
    orchestrator = _Orchestrator(config, spec, report, barrier)
    began = time.monotonic()
    progress.start(name, spec.total(config))
    for worker in workers:
        worker.start()
    orchestrator.thread.start()
    collected: dict[int, dict[str, Any]] = {}
    lost: set[int] = set()
    while len(collected) + len(lost) < count:
        try:
            index, data = results.get(timeout=POLL)
            collected[index] = data
            continue
        except queue.Empty:
            pass
        if sampler is not None:
            sampler.poll()
        done = int(time.monotonic() - began) if spec.timed else sum(counters[i] for i in range(count))
        progress.update(done)
        for i, worker in enumerate(workers):
            if i in collected or i in lost or worker.is_alive() or not results.empty():
                continue
            lost.add(i)  # ended without a result
            orchestrator.errors.error("worker died", f"{worker.name} exit code {getattr(worker, 'exitcode', None)}")
            barrier.abort()
    ended = time.monotonic()
    for worker in workers:
        worker.join(timeout=30)
    barrier.abort()  # releases an orchestrator still waiting after a failure
    orchestrator.thread.join(timeout=30)
    report.duration = ended - began
    if orchestrator.active_since is not None:
        report.extra["active_seconds"] = round(ended - orchestrator.active_since, 3)
    for index in sorted(collected):
        report.result.merge(WorkerResult.from_dict(collected[index]))
    report.result.merge(orchestrator.errors)
    _conclude(config, report, sampler)
    progress.finish("ok" if report.error_count == 0 else f"{report.error_count} error(s)")
    try:
        report.leaks, report.leak_settle = settle_leaks(config, report.prefix)
    except LeakCheckUnavailable as exc:
        report.result.error("leak check unavailable", str(exc))
    return report


def _conclude(config: StressConfig, report: ScenarioReport, sampler: MemorySampler | None) -> None:
    """Figures that need every worker's results: derived latencies and cross-checks."""
    result = report.result
    if report.name == "soak":
        report.operations = result.counts.get("rounds", 0)
        report.clients = result.counts.get("connected", 0)
        if sampler is not None:
            report.extra["memory"] = sampler.summary()
    held = report.extra.get("held_at_peak")
    if held is not None and held != result.counts.get("connected", 0):
        result.error("clients not held", f"the server held {held} of {result.counts.get('connected', 0)} at the peak")
    sweep = report.extra.get("sweep")
    if sweep is not None:
        report.extra["active_seconds"] = sweep["seconds"]
        tolerated = sum(n for k, n in result.counts.items() if k.startswith("tolerated "))
        if tolerated:
            report.notes.append(
                f"{tolerated} handler-failed repl(ies) after the forced sweep: the load-test "
                "conversation reports its rejected questions as a failed handler"
            )
        for closed_at in result.values.get("closed_at", []):
            result.latency("sweep-to-close", (closed_at - sweep["started_at"]) * 1000)
        expected = result.counts.get("pending", 0)
        if sweep["ok"] and sweep["rejected"] != expected:
            result.error("sweep rejected", f"{sweep['rejected']} question(s) rejected, {expected} were pending")
