"""What this process holds for chat_ws, in one object: its sockets, askers, timers and tasks.

Everything else chat_ws keeps is in the store (shared by every process) or is configuration
(settings, the handler registry). ``runtime()`` returns the process's Runtime, made on first use,
the way channels keeps ``channel_layers``; ``reset_runtime()`` (chat_ws.testing.reset) cancels
what it holds and starts a fresh one.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chat_ws.delivery import Endpoint
    from chat_ws.promises import Waiter


class Runtime:
    """The per-process state of chat_ws."""

    def __init__(self, server_id: str | None = None) -> None:
        # this process's name in presence records and settlement notices
        self.server_id: str = server_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.endpoints: dict[str, Endpoint] = {}  # client-id -> the socket served here (delivery)
        self.waiters: dict[str, Waiter] = {}  # p-key -> the asker waiting here (promises)
        self.grace_timers: dict[str, asyncio.TimerHandle] = {}  # client-id -> reconnect grace (presence)
        self.background: set[asyncio.Task[Any]] = set()  # grace expiries running (presence)
        self.handler_tasks: set[asyncio.Task[None]] = set()  # handlers running as tasks (dispatch)
        # the process is shutting down (chat_ws.shutdown): sockets are refused, and an asker
        # cancelled now leaves its question pending for the client's reconnect elsewhere
        self.stopping: bool = False
        self.askers = itertools.count(1)  # numbers this process's ask() calls (Question.asker)
        self.shutdown_hooked: bool = False  # the consumer tried to install the SIGTERM step (shutdown)

    def close(self) -> None:
        """Cancel every timer, asker and task this process holds (callable from any thread)."""
        for timer in self.grace_timers.values():
            timer.cancel()
        for waiter in self.waiters.values():
            if not waiter.loop.is_closed():
                waiter.loop.call_soon_threadsafe(waiter.abort)
        for task in (*self.handler_tasks, *self.background):
            loop = task.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)
        self.grace_timers.clear()
        self.waiters.clear()
        self.handler_tasks.clear()
        self.background.clear()
        self.endpoints.clear()


_runtime: Runtime | None = None


def runtime() -> Runtime:
    """This process's Runtime (made on first use, named by the SERVER_ID setting if set)."""
    global _runtime
    if _runtime is None:
        from chat_ws.conf import get_settings

        _runtime = Runtime(get_settings()["SERVER_ID"])
    return _runtime


def reset_runtime() -> None:
    """Cancel what this process holds and start afresh with the same server id."""
    global _runtime
    if _runtime is not None:
        _runtime.close()
        _runtime = Runtime(_runtime.server_id)
