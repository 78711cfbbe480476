"""The chaos run's fault schedule: server kills, graceful stops, Redis restarts, socket cuts.

Each kind runs on its own period (the first at one period after the start). A stopped server
is restarted on the same port in the background, so that the next fault comes on time; a fault
picks among servers that are up and not already being restarted (none: it is skipped and
counted). :meth:`FaultInjector.stop` ends the schedule and waits until every server and Redis
are back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from loadtest.chaos_client import Hub
from loadtest.chaos_env import ChaosEnv, DemoServer
from loadtest.ledger import Faults

logger = logging.getLogger(__name__)

RESTART_ATTEMPTS = 3  # starts of a stopped server before the run goes on without it


class FaultInjector:
    """Runs the four fault loops against one ChaosEnv and the clients of one Hub."""

    def __init__(
        self,
        env: ChaosEnv,
        hub: Hub,
        rng: random.Random,
        *,
        kill_every: float,
        term_every: float,
        redis_restart_every: float,
        cut_every: float,
        cut_fraction: float,
        term_bound: float,
    ) -> None:
        self.env = env
        self.hub = hub
        self.rng = rng
        self.periods = {
            "kill": kill_every, "term": term_every, "redis": redis_restart_every, "cut": cut_every,
        }  # fmt: skip
        self.cut_fraction = cut_fraction
        self.term_bound = term_bound
        self.faults = Faults()
        self.notes: list[str] = []
        self._stop = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._restarts: set[asyncio.Task[None]] = set()
        self._redis_lock = asyncio.Lock()
        self._until = 0.0  # loop time: no fault falls due at or after it

    def start(self, duration: float) -> None:
        """Run the schedule; faults fall due at one period, two periods, ... before ``duration``."""
        self._until = asyncio.get_running_loop().time() + duration
        actions: dict[str, Callable[[], Awaitable[None]]] = {
            "kill": self.kill, "term": self.term, "redis": self.restart_redis, "cut": self.cut,
        }  # fmt: skip
        for name, action in actions.items():
            period = self.periods[name]
            if period > 0:
                self._loops.append(asyncio.create_task(self._every(period, action), name=f"chaos-{name}"))

    async def _every(self, period: float, action: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + period
        while due < self._until:
            try:
                await asyncio.wait_for(self._stop.wait(), max(0.0, due - loop.time()))
                return  # the schedule ended
            except asyncio.TimeoutError:
                pass
            due += period
            try:
                await action()
            except Exception as exc:
                logger.exception("fault %s failed", getattr(action, "__name__", action))
                self.notes.append(f"fault {getattr(action, '__name__', action)} failed: {exc}")

    async def stop(self) -> None:
        """End the schedule; wait for the restarts under way; make sure everything runs."""
        self._stop.set()
        await asyncio.gather(*self._loops)
        while self._restarts:
            await asyncio.gather(*list(self._restarts))
        async with self._redis_lock:
            if self.env.redis.proc is None or self.env.redis.proc.poll() is not None:
                await asyncio.to_thread(self.env.redis.start)
        down = [s for s in self.env.servers if not s.up]
        for server in down:
            await self._start(server)

    # ------------------------------------------------------------------ faults
    def _pick(self) -> DemoServer | None:
        ready = [s for s in self.env.servers if s.up and not s.busy]
        if not ready:
            self.faults.skipped += 1
            return None
        server = self.rng.choice(ready)
        server.busy = True
        return server

    async def kill(self) -> None:
        """SIGKILL a random server's process group; start it again on the same port."""
        server = self._pick()
        if server is None:
            return
        self.faults.kills.append((time.time(), server.name))
        await asyncio.to_thread(server.kill)
        logger.info("killed %s", server.name)
        self._background(self._start(server))

    async def term(self) -> None:
        """SIGTERM a random server (a deploy): wait for its exit (bounded), then start it again."""
        server = self._pick()
        if server is None:
            return
        began = time.time()

        async def deploy() -> None:
            seconds, forced = await asyncio.to_thread(server.term, self.term_bound)
            self.faults.terms.append((began, server.name, seconds, forced))
            logger.info("%s exited %.2fs after SIGTERM%s", server.name, seconds, " (killed)" if forced else "")
            await self._start(server)

        self._background(deploy())

    async def restart_redis(self) -> None:
        """SIGTERM Redis, wait for its exit, start it on the same port and AOF dir, wait for PING."""
        async with self._redis_lock:
            began = time.time()
            seconds = await asyncio.to_thread(self.env.redis.restart)
            self.faults.redis_restarts.append((began, seconds))
            logger.info("Redis restarted in %.2fs", seconds)

    async def cut(self) -> None:
        """Abort the TCP transport of a random share of the open client sockets (no close frame)."""
        open_now = sorted(self.hub.open, key=lambda c: c.client_id)
        if not open_now:
            return
        n = min(len(open_now), max(1, round(self.cut_fraction * len(open_now))))
        for client in self.rng.sample(open_now, n):
            client.cut()
        self.faults.cuts.append((time.time(), n))

    # ------------------------------------------------------------------ restarts
    def _background(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _start(self, server: DemoServer) -> None:
        try:
            for attempt in range(1, RESTART_ATTEMPTS + 1):
                try:
                    await asyncio.to_thread(server.start)
                    return
                except (RuntimeError, TimeoutError) as exc:
                    self.notes.append(f"{server.name} did not start (attempt {attempt}): {exc}")
                    await asyncio.to_thread(server.kill)
        finally:
            server.busy = False
