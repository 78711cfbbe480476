"""The load generator: worker processes that hold sockets and run conversations on command.

The parent talks to each worker through a pipe: ``open`` (n sockets, k handshakes at a time),
``converse`` (every held socket runs one load-test conversation), ``close`` (leave and drop
every socket), ``stop``. Work is split evenly over the workers; replies carry wall-clock times
so that the parent can take the span over all of them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from multiprocessing.connection import Connection
from typing import Any

from bench.clients import Target, close_socket, converse, keep_alive, open_socket
from bench.report import merge_counts
from devtools.processes import raise_fd_limit


class _Held:
    """Sockets a worker holds, with the idle readers of socket.io connections."""

    def __init__(self) -> None:
        self.target: Target | None = None
        self.sockets: list[Any] = []
        self.readers: list[asyncio.Task[None]] = []

    def pause_readers(self) -> None:
        for task in self.readers:
            task.cancel()
        self.readers = []


async def _open(held: _Held, target: Target, n: int, concurrency: int, tag: str, idle: bool) -> dict[str, Any]:
    gate = asyncio.Semaphore(max(1, concurrency))
    errors: dict[str, int] = {}
    start = len(held.sockets)

    async def one(i: int) -> Any:
        async with gate:
            try:
                return await open_socket(target, f"{tag}-{os.getpid()}-{start + i}")
            except Exception as exc:
                kind = type(exc).__name__
                errors[kind] = errors.get(kind, 0) + 1
                return None

    began = time.time()
    opened = [ws for ws in await asyncio.gather(*(one(i) for i in range(n))) if ws is not None]
    ended = time.time()
    held.target = target
    held.sockets.extend(opened)
    if idle and target.kind == "sio":
        held.readers.extend(asyncio.create_task(keep_alive(ws)) for ws in opened)
    return {"opened": len(opened), "errors": errors, "began": began, "ended": ended}


async def _converse(held: _Held, questions: int) -> dict[str, Any]:
    assert held.target is not None
    held.pause_readers()
    target = held.target
    errors: dict[str, int] = {}

    async def one(ws: Any) -> Any:
        try:
            return await converse(target, ws, questions)
        except Exception as exc:
            kind = type(exc).__name__
            errors[kind] = errors.get(kind, 0) + 1
            return None

    began = time.time()
    results = [r for r in await asyncio.gather(*(one(ws) for ws in held.sockets)) if r is not None]
    ended = time.time()
    return {
        "began": began,
        "ended": ended,
        "answered": sum(r.answered for r in results),
        "cycles": [c for r in results for c in r.cycles],
        "server_p50": [r.server["p50"] for r in results if "p50" in r.server],
        "server_p99": [r.server["p99"] for r in results if "p99" in r.server],
        "errors": errors,
    }


async def _close(held: _Held, concurrency: int) -> dict[str, Any]:
    held.pause_readers()
    gate = asyncio.Semaphore(max(1, concurrency))
    target = held.target

    async def one(ws: Any) -> None:
        async with gate:
            await close_socket(target, ws)  # type: ignore[arg-type]

    count = len(held.sockets)
    await asyncio.gather(*(one(ws) for ws in held.sockets))
    held.sockets = []
    return {"closed": count}


async def _serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    held = _Held()
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        op = command.pop("op")
        if op == "stop":
            await _close(held, 200)
            conn.send({})
            return
        if op == "open":
            reply = await _open(held, **command)
        elif op == "converse":
            reply = await _converse(held, **command)
        elif op == "close":
            reply = await _close(held, **command)
        else:
            reply = {"errors": {f"unknown op {op}": 1}}
        conn.send(reply)


def _worker(conn: Connection) -> None:
    raise_fd_limit()
    asyncio.run(_serve(conn))


class Generator:
    """Parent side: ``count`` worker processes, each taking an equal share of every command."""

    def __init__(self, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        for _ in range(max(1, count)):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child,), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def _shares(self, total: int, workers: int) -> list[int]:
        return [total // workers + (1 if i < total % workers else 0) for i in range(workers)]

    def _call(self, commands: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
        used = [(pipe, c) for pipe, c in zip(self.pipes, commands) if c is not None]
        for pipe, command in used:
            pipe.send(command)
        return [pipe.recv() for pipe, _ in used]

    def open(self, target: Target, n: int, *, concurrency: int, tag: str, idle: bool = False) -> dict[str, Any]:
        """Open n sockets over the workers; the span and errors over all of them."""
        workers = min(len(self.pipes), max(1, n))
        shares = self._shares(n, workers)
        per = max(1, concurrency // workers)
        replies = self._call(
            [
                {"op": "open", "target": target, "n": s, "concurrency": per, "tag": f"{tag}-{i}", "idle": idle}
                if i < workers
                else None
                for i, s in enumerate(shares + [0] * (len(self.pipes) - workers))
            ]
        )
        return {
            "opened": sum(r["opened"] for r in replies),
            "errors": merge_counts(r["errors"] for r in replies),
            "seconds": max(r["ended"] for r in replies) - min(r["began"] for r in replies),
        }

    def converse(self, questions: int) -> dict[str, Any]:
        """Every held socket runs one conversation; merged figures."""
        replies = self._call([{"op": "converse", "questions": questions} for _ in self.pipes])
        return {
            "answered": sum(r["answered"] for r in replies),
            "seconds": max(r["ended"] for r in replies) - min(r["began"] for r in replies),
            "cycles": [c for r in replies for c in r["cycles"]],
            "server_p50": [v for r in replies for v in r["server_p50"]],
            "server_p99": [v for r in replies for v in r["server_p99"]],
            "errors": merge_counts(r["errors"] for r in replies),
        }

    def close(self, *, concurrency: int = 200) -> int:
        per = max(1, concurrency // len(self.pipes))
        return sum(r["closed"] for r in self._call([{"op": "close", "concurrency": per} for _ in self.pipes]))

    def stop(self) -> None:
        try:
            self._call([{"op": "stop"} for _ in self.pipes])
        finally:
            for proc in self.procs:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.kill()

