"""The reference peer: the same ask/answer workload on python-socketio, served by uvicorn.

``uvicorn bench.socketio_server:app --port 8200`` (run from the checkout). With ``SIO_REDIS_URL``
set, the server uses ``AsyncRedisManager`` (what a multi-process socket.io deployment runs). A client emits
``start`` with ``{"questions": N}``; the server asks N questions back to back with
``await sio.call("ask", ...)`` (the client's ack is the answer) and ends with ``done``, carrying
the same figures as chat_ws's ``loadtest-done``. Origins are checked as by default (same origin).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import socketio

QUESTION_TIMEOUT = 60  # seconds per question, as the chat_ws load-test conversation uses

# SIO_REDIS_URL: run as a socket.io user with several processes does, through AsyncRedisManager.
_REDIS = os.environ.get("SIO_REDIS_URL")
_MANAGER = socketio.AsyncRedisManager(_REDIS, channel=os.environ.get("SIO_CHANNEL", "socketio")) if _REDIS else None
sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False, client_manager=_MANAGER)
app = socketio.ASGIApp(sio)


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
    """Accept every client (the benchmark measures the protocol, not authentication)."""
    return True


@sio.on("start")
async def start(sid: str, data: dict[str, Any]) -> None:
    """Ask ``questions`` questions one after the other; report the latencies at the end."""
    count = int(data.get("questions", 10))
    latencies: list[float] = []
    for i in range(count):
        began = time.perf_counter()
        await sio.call("ask", {"text": f"Load-test question {i + 1}"}, to=sid, timeout=QUESTION_TIMEOUT)
        latencies.append((time.perf_counter() - began) * 1000)
    ordered = sorted(latencies)
    await sio.emit(
        "done",
        {
            "asked": count,
            "answered": len(latencies),
            "p50-ms": round(statistics.median(ordered), 3) if ordered else 0.0,
            "p99-ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3) if ordered else 0.0,
        },
        to=sid,
    )
