"""``python -m loadtest --scenario chaos``: the demo interview under load while servers die.

One run starts its own Redis (AOF), database and K demo servers, runs C interviewing clients
(:mod:`loadtest.chaos_client`) for ``duration`` seconds while :mod:`loadtest.faults` kills,
stops and restarts servers, restarts Redis and cuts sockets; then the faults stop, the clients
finish their interviews (at most ``settle`` seconds) and leave, and :mod:`loadtest.ledger`
compares what the clients saw with what the servers kept (:mod:`loadtest.evidence`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from devtools.processes import raise_fd_limit
from devtools.serve import PRODUCTION_SERVER, SERVERS
from loadtest.chaos_client import Hub, Policy, lane
from loadtest.chaos_env import POSTGRES_ADMIN, ChaosEnv
from loadtest.evidence import collect_live, tracebacks
from loadtest.faults import FaultInjector
from loadtest.ledger import Faults, Ledger, check, render

logger = logging.getLogger(__name__)

RAMP = 2.0  # seconds over which the clients' first connects are spread
LEAVE_GRACE = 30.0  # seconds after the settle in which clients still try to leave
LANE_MARGIN = 15.0  # seconds past that before lanes still running are cancelled
PROGRESS_EVERY = 10.0  # seconds between progress lines
MAX_RECORDS = 2000  # interview records kept in the JSON result (those with a violation or no finish)


def script_questions() -> list[tuple[str, str]]:
    """The demo interviewer's (question id, text) pairs."""
    from stbd_project.interview.script import QUESTIONS

    return list(QUESTIONS)


@dataclass
class ChaosConfig:
    """Options of one chaos run, with the defaults of ``python -m loadtest --scenario chaos``."""

    servers: int = 3
    clients: int = 300
    duration: float = 120.0  # seconds of faults under load
    kill_every: float = 5.0  # seconds between SIGKILLs of a server (0: none)
    term_every: float = 30.0  # seconds between graceful stops (SIGTERM) of a server (0: none)
    redis_restart_every: float = 60.0  # seconds between Redis restarts (0: none)
    cut_every: float = 10.0  # seconds between rounds of socket cuts (0: none)
    cut_fraction: float = 0.05  # share of the open client sockets cut per round
    server: str = PRODUCTION_SERVER  # uvicorn, daphne or mixed
    settle: float = 60.0  # seconds the clients may take to finish their interviews afterwards
    seed: int | None = None
    term_bound: float = 30.0  # seconds a SIGTERMed server may take to exit before SIGKILL
    stall: float = 30.0  # seconds without a message mid-interview before a client gives up
    leak_settle: float = 10.0  # seconds the leak reports may take to reach 0 after the clients left
    log_level: str = "INFO"  # the servers' LOG_LEVEL
    postgres: str = POSTGRES_ADMIN  # the PostgreSQL server the run's database is made on
    keep_logs: str | None = None  # copy the servers' logs here

    def validate(self) -> None:
        if self.servers < 2:
            raise ValueError("--servers must be at least 2 (clients reconnect to another server)")
        if self.clients < 1 or self.duration <= 0 or self.settle < 0:
            raise ValueError("--clients, --duration must be positive and --settle not negative")
        if not 0 <= self.cut_fraction <= 1:
            raise ValueError("--cut-fraction must be within 0..1")
        if self.server not in (*SERVERS, "mixed"):
            raise ValueError(f"--server must be one of {', '.join((*SERVERS, 'mixed'))}")


@dataclass
class ChaosResult:
    """One run: its identity, its ledger and what the tool noticed on the way."""

    run_id: str
    prefix: str
    seed: int
    config: ChaosConfig
    database: str = ""
    servers: list[str] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)
    faults: Faults = field(default_factory=Faults)
    interviews: list[dict[str, Any]] = field(default_factory=list)  # the records of those in question
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # the whole run, start-up and clean-up included
    settle_seconds: float = 0.0  # from the end of the faults until every client left
    logs: str | None = None

    @property
    def ok(self) -> bool:
        return self.ledger.ok

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ledger"] = self.ledger.as_dict()
        return out


Progress = Callable[[str], None]


def run(config: ChaosConfig, progress: Progress | None = None) -> ChaosResult:
    """One chaos run from start-up to clean-up; its result (``result.ok``: no violation)."""
    config.validate()
    seed = config.seed if config.seed is not None else secrets.randbits(32)
    run_id = secrets.token_hex(4)
    result = ChaosResult(run_id=run_id, prefix=f"chaos-{run_id}-", seed=seed, config=config)
    say = progress or (lambda line: None)
    began = time.monotonic()
    raise_fd_limit(config.clients * 2 + 500)
    env = ChaosEnv(run_id, config.servers, config.server, log_level=config.log_level, postgres=config.postgres)
    try:
        env.start()
        result.database = env.db.kind
        if env.db.note:
            result.notes.append(env.db.note)
        result.servers = [s.name for s in env.servers]
        say(f"run {run_id}: {len(env.servers)} servers ({', '.join(result.servers)}), Redis :{env.redis.port}, "
            f"{env.db.kind} database, {config.clients} clients, {config.duration:g}s of faults, seed {seed}")  # fmt: skip
        records, faults, settle_seconds = asyncio.run(_drive(env, config, result, seed, say))
        result.settle_seconds = settle_seconds
        say("checking the ledger")
        server_side = collect_live(env, result.prefix, config.leak_settle)
        env.stop_servers()  # a traceback written while stopping counts too
        server_side.tracebacks = tracebacks(env.logs)
        script = [qid for qid, _ in script_questions()]
        result.ledger = check(records, server_side, script, env.key_prefix, faults)
        result.faults = faults
        named = {v.client_id for v in result.ledger.every if v.client_id}
        result.interviews = [
            asdict(r) for r in records if r.client_id in named or r.finished is None
        ][:MAX_RECORDS]
        if config.keep_logs:
            result.logs = str(env.keep_logs(Path(config.keep_logs)))
    finally:
        env.close()
        result.seconds = time.monotonic() - began
    return result


async def _drive(
    env: ChaosEnv, config: ChaosConfig, result: ChaosResult, seed: int, say: Progress
) -> tuple[list[Any], Faults, float]:
    """The clients and the faults for ``duration``; then the settle. The clients' records."""
    rng = random.Random(seed)
    questions = {text: qid for qid, text in script_questions()}
    policy = Policy(stall=config.stall)
    hub = Hub([s.ws_url for s in env.servers], result.prefix, questions, policy, rng.randrange(1 << 32))
    injector = FaultInjector(
        env, hub, random.Random(rng.randrange(1 << 32)),
        kill_every=config.kill_every, term_every=config.term_every,
        redis_restart_every=config.redis_restart_every, cut_every=config.cut_every,
        cut_fraction=config.cut_fraction, term_bound=config.term_bound,
    )  # fmt: skip
    lanes = [asyncio.create_task(lane(hub, n, RAMP), name=f"chaos-lane-{n}") for n in range(config.clients)]
    injector.start(config.duration)
    loop = asyncio.get_running_loop()
    end = loop.time() + config.duration
    while loop.time() < end:
        await asyncio.sleep(min(PROGRESS_EVERY, end - loop.time()))  # the run's schedule
        say(_status(hub, injector.faults, loop.time() - end + config.duration))
    say("faults stop; waiting for every server and Redis to be back")
    await injector.stop()
    result.notes.extend(injector.notes)
    settle_began = time.time()
    hub.settle_deadline = settle_began + config.settle
    hub.leave_deadline = hub.settle_deadline + LEAVE_GRACE
    hub.stop_new.set()
    say(f"settling: clients finish their interviews (at most {config.settle:g}s) and leave")
    done, running = await asyncio.wait(lanes, timeout=config.settle + LEAVE_GRACE + LANE_MARGIN)
    for task in running:
        task.cancel()
    if running:
        result.notes.append(f"{len(running)} client lane(s) still running after the settle were cancelled")
        await asyncio.wait(running)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            result.notes.append(f"a client lane failed: {task.exception()!r}")
    return hub.records, injector.faults, time.time() - settle_began


def _status(hub: Hub, faults: Faults, elapsed: float) -> str:
    finished = sum(1 for r in hub.records if r.finished is not None)
    return (
        f"{elapsed:5.0f}s  interviews {len(hub.records)} started, {finished} finished; "
        f"{len(hub.open)} sockets open; kills {len(faults.kills)}, stops {len(faults.terms)}, "
        f"Redis restarts {len(faults.redis_restarts)}, cuts {sum(n for _, n in faults.cuts)}"
    )


# ---------------------------------------------------------------------- command line
def parser() -> argparse.ArgumentParser:
    d = ChaosConfig()
    p = argparse.ArgumentParser(
        prog="python -m loadtest --scenario chaos",
        description=(
            "Run the demo interview with many clients on K private demo servers while servers are "
            "killed, stopped and restarted, Redis restarts and sockets are cut; then check the ledger "
            "of what the clients saw against what the servers kept. Exit code 1 on any violation."
        ),
    )
    p.add_argument("--scenario", choices=["chaos"], default="chaos", help=argparse.SUPPRESS)
    p.add_argument("--servers", type=int, default=d.servers, help="demo server processes (default %(default)s)")
    p.add_argument("--clients", type=int, default=d.clients, help="clients interviewing at once (default %(default)s)")
    p.add_argument("--duration", type=float, default=d.duration, help="seconds of faults (default %(default)s)")
    p.add_argument("--kill-every", type=float, default=d.kill_every, help="seconds between SIGKILLs (0: none)")
    p.add_argument("--term-every", type=float, default=d.term_every, help="seconds between SIGTERMs (0: none)")
    p.add_argument(
        "--redis-restart-every", type=float, default=d.redis_restart_every, help="seconds between Redis restarts"
    )
    p.add_argument("--cut-every", type=float, default=d.cut_every, help="seconds between socket cuts (0: none)")
    p.add_argument("--cut-fraction", type=float, default=d.cut_fraction, help="share of open sockets cut each time")
    p.add_argument(
        "--server", choices=[*SERVERS, "mixed"], default=d.server, help="ASGI server (default %(default)s)"
    )
    p.add_argument("--settle", type=float, default=d.settle, help="seconds to finish interviews afterwards")
    p.add_argument("--seed", type=int, help="seed of the fault schedule and the clients' choices")
    p.add_argument("--stall", type=float, default=d.stall, help="seconds of silence before a client gives up")
    p.add_argument("--log-level", default=d.log_level, help="the servers' LOG_LEVEL (default %(default)s)")
    p.add_argument("--postgres", default=d.postgres, help="PostgreSQL server for the run's database")
    p.add_argument("--json", metavar="FILE", help="write the whole result here")
    p.add_argument("--keep-logs", metavar="DIR", help="copy every server log (one per start) here")
    return p


def main(argv: list[str] | None = None) -> int:
    options = parser().parse_args(argv)
    config = ChaosConfig(
        servers=options.servers, clients=options.clients, duration=options.duration,
        kill_every=options.kill_every, term_every=options.term_every,
        redis_restart_every=options.redis_restart_every, cut_every=options.cut_every,
        cut_fraction=options.cut_fraction, server=options.server, settle=options.settle, seed=options.seed,
        stall=options.stall, log_level=options.log_level, postgres=options.postgres, keep_logs=options.keep_logs,
    )  # fmt: skip
    try:
        config.validate()
    except ValueError as exc:
        parser().error(str(exc))

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # clean up as after Ctrl-C

    signal.signal(signal.SIGTERM, interrupted)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = run(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        print("interrupted: servers, Redis, database and files of the run removed", file=sys.stderr)
        return 130
    print(f"chaos run {result.run_id} (seed {result.seed}): {result.config.servers} x {result.config.server} "
          f"servers, {result.database} database, {result.seconds:.0f}s, settle {result.settle_seconds:.1f}s")  # fmt: skip
    for note in result.notes:
        print(f"note: {note}")
    print(render(result.ledger))
    if result.logs:
        print(f"server logs kept in {result.logs}")
    if options.json:
        with open(options.json, "w") as out:
            json.dump(result.as_dict(), out, indent=1, default=str)
        print(f"result written to {options.json}")
    if not result.ok:
        found = ", ".join(f"{k} {n}" for k, n in result.ledger.violations.items() if n)
        print(f"violations: {found}", file=sys.stderr)
        return 1
    print("no violations")
    return 0
