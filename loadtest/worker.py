"""One load generator (a thread or a process): its share of a scenario's clients, and its helpers."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from devtools.processes import raise_fd_limit
from loadtest.client import ClientError, SimClient
from loadtest.config import StressConfig
from loadtest.report import WorkerResult

logger = logging.getLogger(__name__)

PHASE_TIMEOUT = 3600.0  # seconds a worker waits for the others at a phase (the runner aborts sooner)


def share_of(total: int, index: int, count: int) -> int:
    """Worker index's part of total over count workers (the first ones take the remainder)."""
    return total // count + (1 if index < total % count else 0)


class Worker:
    """The context a scenario runs in: its share of the work, progress, phases and results."""

    def __init__(
        self,
        config: StressConfig,
        scenario: str,
        index: int,
        count: int,
        progress: Any,
        barrier: Any,
    ) -> None:
        self.config = config
        self.scenario = scenario
        self.index = index
        self.count = count
        self.progress = progress  # progress[index] counts this worker's finished steps
        self.barrier = barrier  # threading.Barrier or multiprocessing Barrier of count + 1 parties
        self.result = WorkerResult()
        self.prefix = config.prefix(scenario)
        self.tolerated: set[str] = set()  # error kinds counted, not reported as errors, from now on
        self._serial = 0

    # ------------------------------------------------------------------ shares
    def share(self, total: int) -> int:
        """This worker's part of ``total`` (the first workers take the remainder)."""
        return share_of(total, self.index, self.count)

    def concurrency(self, total: int) -> int:
        return max(1, self.share(max(total, self.count)))

    def new_id(self) -> str:
        """A fresh client-id under the scenario's prefix."""
        self._serial += 1
        return f"{self.prefix}{self.index}-{self._serial}"

    def client(self, client_id: str | None = None) -> SimClient:
        return SimClient(self.config, client_id or self.new_id(), on_error=self.client_error)

    def client_error(self, kind: str, detail: str) -> None:
        """Something a client saw: an error, unless the scenario expects it at this point."""
        if kind in self.tolerated:
            self.result.count(f"tolerated {kind}")
        else:
            self.result.error(kind, detail)

    def step(self, n: int = 1) -> None:
        self.progress[self.index] += n

    # ------------------------------------------------------------------ coordination
    async def phase(self, name: str) -> None:
        """Wait until every worker reached ``name`` and the orchestrator did its part."""
        loop = asyncio.get_running_loop()
        for _ in range(2):  # arrive, then be released
            try:
                await loop.run_in_executor(None, self.barrier.wait, PHASE_TIMEOUT)
            except threading.BrokenBarrierError:
                raise ClientError("aborted", f"another worker failed before phase {name}") from None

    def abort(self) -> None:
        self.barrier.abort()

    # ------------------------------------------------------------------ helpers
    async def guarded(self, coro: Awaitable[Any]) -> Any:
        """Await coro; a ClientError is recorded and gives None."""
        try:
            return await coro
        except ClientError as exc:
            self.result.error(exc.kind, exc.detail)
            return None

    async def each(self, items: Iterable[Any], func: Callable[[Any], Awaitable[Any]], limit: int) -> list[Any]:
        """Run func over items with at most ``limit`` at a time; errors recorded, results in order."""
        gate = asyncio.Semaphore(max(1, limit))

        async def one(item: Any) -> Any:
            async with gate:
                return await self.guarded(func(item))

        return list(await asyncio.gather(*(one(i) for i in items)))

    async def connect(self, client: SimClient) -> SimClient:
        ms = await client.connect()
        self.result.latency("connect", ms)
        self.result.count("connected")
        return client

    async def connect_many(self, n: int, *, progress: bool = True) -> list[SimClient]:
        """Open n clients, ``connect_concurrency`` handshakes at a time over all workers."""

        async def one(client: SimClient) -> SimClient:
            try:
                return await self.connect(client)
            finally:
                if progress:
                    self.step()

        clients = [self.client() for _ in range(n)]
        opened = await self.each(clients, one, self.concurrency(self.config.connect_concurrency))
        return [c for c in opened if c is not None]

    async def leave(self, client: SimClient) -> None:
        try:
            self.result.latency("forget", await client.leave())
            self.result.count("left")
        except ClientError:
            await client.abort()
            raise

    async def leave_many(self, clients: list[SimClient], *, progress: bool = True) -> None:
        """close-channel on every client; each must be closed with 4002."""

        async def one(client: SimClient) -> None:
            try:
                await self.leave(client)
            finally:
                if progress:
                    self.step()

        await self.each(clients, one, self.concurrency(self.config.connect_concurrency))

    async def drop_all(self, clients: list[SimClient]) -> None:
        """Close sockets still open after a failure, without waiting on the protocol."""
        await asyncio.gather(*(c.abort() for c in clients if c.closed is None or not c.closed.done()))


def run_worker(worker: Worker, scenario: Callable[[Worker], Awaitable[None]]) -> dict[str, Any]:
    """Run one scenario in a fresh event loop; return the worker's result as a dict."""
    raise_fd_limit(0)

    async def main() -> None:
        try:
            await scenario(worker)
        except ClientError as exc:
            worker.result.error(exc.kind, exc.detail)
            worker.abort()
        except Exception as exc:
            logger.exception("load-test worker %d failed", worker.index)
            worker.result.error("worker failed", f"{type(exc).__name__}: {exc}")
            worker.abort()

    asyncio.run(main())
    return worker.result.as_dict()
