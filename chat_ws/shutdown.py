"""Graceful shutdown: on SIGTERM, close this process's sockets so that clients reconnect elsewhere.

``shutdown()`` marks the process as stopping (new sockets are refused, and an asker cancelled from
then on leaves its question pending in the store), closes every local socket with 1012 (service
restart; 4012 where the server cannot send 1012) and waits, at most ``SHUTDOWN_TIMEOUT``, until
presence has recorded each close: the client's questions wait through its reconnect grace and are
re-sent by whichever process it reconnects to. An answer given there reaches no asker here and
goes to ``answer_orphaned``.

Neither daphne nor channels' ``ProtocolTypeRouter`` sends ASGI lifespan events, so chat_ws runs
the step from SIGTERM: ``install()`` (called by the consumer at its first socket, when the server
has installed its own handler) puts a handler in front of the server's, which runs ``shutdown()``
and then hands the signal on to the server's handler, which stops the server as it always does.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from types import FrameType
from typing import Any, Callable

from chat_ws import delivery, sessions
from chat_ws.conf import get_settings
from chat_ws.runtime import runtime

logger = logging.getLogger(__name__)

__all__ = ["install", "shutdown"]

SignalHandler = Callable[[int, FrameType | None], Any]


async def shutdown(timeout: float | None = None) -> int:
    """Stop serving chat_ws in this process: refuse new sockets, close the open ones with 1012
    (4012 under daphne) and wait until their closes are recorded, at most ``timeout`` seconds
    (``SHUTDOWN_TIMEOUT``). Returns how many sockets were closed."""
    state = runtime()
    state.stopping = True
    limit = float(get_settings()["SHUTDOWN_TIMEOUT"] if timeout is None else timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    closing: dict[delivery.Endpoint, asyncio.Task[None]] = {}
    # Again until none is left: a socket whose handshake was under way registers after the first round.
    while loop.time() < deadline:
        fresh = [endpoint for endpoint in delivery.endpoints() if endpoint not in closing]
        if not fresh:
            break
        for endpoint in fresh:
            closing[endpoint] = loop.create_task(endpoint.restart())
        await asyncio.wait(closing.values(), timeout=max(0.0, deadline - loop.time()))
    unconfirmed = [task for task in closing.values() if not task.done()]
    for task in unconfirmed:
        task.cancel()
    for task in closing.values():
        if task.done() and not task.cancelled() and task.exception() is not None:
            logger.warning("closing a socket for the shutdown failed: %r", task.exception())
    try:
        await asyncio.wait_for(sessions.flush(), max(0.01, deadline - loop.time()))
    except asyncio.TimeoutError:
        logger.warning("session rows still queued at shutdown are not written; the sweep closes them")
    except Exception:
        logger.exception("could not write the session rows queued at shutdown; the sweep closes them")
    if unconfirmed:
        logger.warning(
            "%d socket(s) not confirmed closed within %gs; the server drops them, and their records "
            "wait for the client's reconnect or the sweep",
            len(unconfirmed),
            limit,
        )
    logger.info(
        "shutting down: closed %d socket(s) with 1012/4012; %d asker(s) leave their questions pending",
        len(closing),
        len(state.waiters),
    )
    return len(closing)


class _Relay:
    """The SIGTERM handler chat_ws puts in front of the server's: ``shutdown()``, then the server's."""

    def __init__(self, loop: asyncio.AbstractEventLoop, previous: SignalHandler) -> None:
        self.loop = loop
        self.previous = previous
        self.task: asyncio.Task[None] | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if runtime().stopping or not self.loop.is_running():  # a second SIGTERM: stop now
            self.previous(signum, frame)
            return
        runtime().stopping = True  # at once: a socket arriving before the step starts is refused
        self.loop.call_soon_threadsafe(self._start, signum)

    def _start(self, signum: int) -> None:
        self.task = self.loop.create_task(self._run(signum), name="chat_ws:shutdown")

    async def _run(self, signum: int) -> None:
        logger.info("received signal %d: closing this process's sockets before the server stops", signum)
        try:
            await shutdown()
        except Exception:
            logger.exception("graceful shutdown failed; the server stops now")
        finally:
            self.previous(signum, None)


def install() -> bool:
    """Put chat_ws's shutdown step in front of the server's SIGTERM handler, once per process.

    Called from the serving event loop (the consumer does so at its first socket): only then has
    the server installed its handler (daphne's reactor installs its own when it starts running).
    Where SIGTERM has no Python handler of the server's (the default action, or not the main
    thread), nothing is installed and SIGTERM stops the process as before. Returns whether the
    step is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(signal.SIGTERM)
    if isinstance(current, _Relay):
        return True
    if not callable(current):  # SIG_DFL, SIG_IGN, or a handler not installed from Python
        return False
    signal.signal(signal.SIGTERM, _Relay(asyncio.get_running_loop(), current))
    logger.debug("graceful shutdown installed in front of the server's SIGTERM handler %r", current)
    return True
