"""devtools: the process helpers and devtools/serve.py (``make run`` / ``make serve``)."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from devtools.processes import accepts, free_port, raise_fd_limit, rss_kib, stop, wait_for_port
from devtools.serve import SERVERS, exit_code, url
from tests.live import ROOT

SERVE = ROOT / "devtools" / "serve.py"
LINE_TIMEOUT = 60.0  # seconds serve.py may take to report that daphne listens
EXIT_TIMEOUT = 30.0  # seconds serve.py may take to exit after a signal


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start devtools/serve.py in its own session; every one started is stopped by its PID."""
    started: list[subprocess.Popen[str]] = []
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env.update({"SQLITE_PATH": str(tmp_path / "db.sqlite3"), "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(SERVE), *args],
            cwd=tmp_path,  # the script finds the checkout by itself
            env=env,
            stdout=subprocess.PIPE,
            stderr=open(tmp_path / f"serve-{len(started)}.log", "w"),
            text=True,
            start_new_session=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop(proc, timeout=EXIT_TIMEOUT)
        assert proc.stdout is not None
        proc.stdout.close()


def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(proc.stdout.readline).result(LINE_TIMEOUT)


# ---------------------------------------------------------------------- serve.py
@pytest.mark.integration
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_prints_the_url_once_listening_and_forwards_signals(serve: Any, sig: int, server: str) -> None:
    port = free_port()
    proc = serve("--host", "127.0.0.1", "--port", str(port), "--server", server)
    line = read_line(proc)
    listening = accepts(port)  # at once: the line must not come before the listener
    assert line == f"chat_ws demo listening on http://127.0.0.1:{port}/\n"
    assert listening, "the URL was printed before the port accepted connections"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/chat_ws/health/", timeout=10) as response:
        assert json.loads(response.read())["healthy"] is True

    os.kill(proc.pid, sig)
    # daphne exits 0; uvicorn re-raises the signal once shut down (a shell reports 128 + N)
    assert proc.wait(timeout=EXIT_TIMEOUT) in (0, 128 + sig)
    assert not accepts(port), f"{server} outlived serve.py"


@pytest.mark.integration
@pytest.mark.parametrize("server", SERVERS)
def test_serve_exits_with_the_server_when_it_cannot_start(serve: Any, server: str) -> None:
    proc = serve("--port", str(free_port()), "--app", "no_such_module:application", "--server", server)
    assert proc.wait(timeout=EXIT_TIMEOUT) != 0
    assert proc.stdout is not None and "listening" not in proc.stdout.read()  # it never listened


def test_url_and_exit_code() -> None:
    assert url("127.0.0.1", 8000) == "http://127.0.0.1:8000/"
    assert url("0.0.0.0", 8001) == "http://127.0.0.1:8001/"
    assert url("::", 8002) == "http://[::1]:8002/"
    assert exit_code(0) == 0 and exit_code(3) == 3
    assert exit_code(-signal.SIGTERM) == 128 + signal.SIGTERM


# ---------------------------------------------------------------------- processes
def test_wait_for_port_sees_a_listener_and_a_dead_process() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        wait_for_port(listener.getsockname()[1], None, 5)
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait(timeout=EXIT_TIMEOUT)
    with pytest.raises(RuntimeError, match="exited with 3"):
        wait_for_port(free_port(), dead, 5)
    with pytest.raises(TimeoutError):
        wait_for_port(free_port(), None, 0.2)


def test_stop_signals_by_pid_and_returns_the_exit_code() -> None:
    code = "import signal, sys; signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); print(1, flush=True); signal.pause()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "1\n"  # the handler is installed
    assert stop(proc) == 7
    proc.stdout.close()


def test_rss_and_fd_limit() -> None:
    assert rss_kib(os.getpid()) > 1000
    with pytest.raises(OSError):
        rss_kib(2**22 + 1)  # above the largest pid Linux hands out
    soft, hard = raise_fd_limit()
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)
    assert soft == hard or hard == resource.RLIM_INFINITY
