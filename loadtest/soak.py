"""The soak: a steady mix of connects, pings and questions for a while, with the server's memory."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from devtools.processes import rss_kib
from loadtest.client import ClientError, now_ms
from loadtest.worker import Worker

WARM_UP = 0.2  # share of the run after which memory drift is measured


async def soak(w: Worker) -> None:
    """Each lane keeps one client busy: ping, a short load-test conversation, think time; now and
    then it leaves and comes back under a new client-id."""
    cfg = w.config
    loop = asyncio.get_running_loop()
    end = loop.time() + cfg.duration

    async def think() -> None:
        await asyncio.sleep(min(max(0.0, end - loop.time()), random.expovariate(1 / cfg.think)))

    async def lane() -> None:
        await asyncio.sleep(random.uniform(0, cfg.think))  # lanes start spread out
        while loop.time() < end:
            client = w.client()
            try:
                await w.connect(client)
                while loop.time() < end:
                    w.result.latency("ping", await client.ping())
                    sent = now_ms()
                    await client.start_loadtest(cfg.soak_questions)
                    for _ in range(cfg.soak_questions):
                        _, arrived = await client.next_question()
                        w.result.latency("question", arrived - sent)
                        sent = now_ms()
                        await client.answer()
                    await client.finished()
                    w.result.count("rounds")
                    w.step()
                    await think()
                    if random.random() < cfg.churn:
                        break
                await w.leave(client)
            except ClientError as exc:
                w.result.error(exc.kind, exc.detail)
                await client.abort()

    await asyncio.gather(*(lane() for _ in range(w.share(cfg.soak_clients))))


@dataclass
class MemorySampler:
    """RSS samples of one process over a run."""

    pid: int
    interval: float
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, KiB)
    _start: float = field(default_factory=time.monotonic)
    _next: float = 0.0

    def poll(self) -> None:
        """Take a sample when one is due."""
        elapsed = time.monotonic() - self._start
        if elapsed >= self._next:
            self._next = elapsed + self.interval
            try:
                self.samples.append((round(elapsed, 2), rss_kib(self.pid)))
            except OSError:
                pass  # the server is gone or not readable: the summary shows the gap

    def summary(self) -> dict[str, Any]:
        """First, after warm-up, last and max RSS; the drift since warm-up and its slope."""
        if len(self.samples) < 2:
            return {"pid": self.pid, "samples": self.samples, "note": "too few samples"}
        span = self.samples[-1][0]
        warm = next((s for s in self.samples if s[0] >= WARM_UP * span), self.samples[0])
        tail = [s for s in self.samples if s[0] >= warm[0]]
        return {
            "pid": self.pid,
            "samples": self.samples,
            "first_kib": self.samples[0][1],
            "warm_kib": warm[1],
            "last_kib": self.samples[-1][1],
            "max_kib": max(kib for _, kib in self.samples),
            "drift_kib": self.samples[-1][1] - warm[1],
            "slope_kib_per_min": round(_slope(tail) * 60, 1),
        }


def _slope(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of (t, y) points, per second."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / var if var else 0.0
