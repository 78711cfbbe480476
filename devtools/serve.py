"""Serve the demo site and say where, once it listens (``make run``, ``make serve``).

``python devtools/serve.py --server uvicorn --host 127.0.0.1 --port 8000`` starts the server as a
child, waits (at most ``--start-timeout`` seconds) until the port accepts connections, prints one
line ``chat_ws demo listening on http://127.0.0.1:8000/`` and then waits on it, forwarding
SIGINT, SIGTERM and SIGHUP to it, and exits with its exit code. The environment passes through
(``REDIS_URL`` and the other variables the demo's settings read).

``server_command()`` is the one description of how each server runs the demo; the integration
tests and the benchmark start servers with it too.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(ROOT))

from devtools.processes import stop, wait_for_port  # noqa: E402

APP = "stbd_project.asgi:application"
START_TIMEOUT = 60.0  # seconds the server may take to listen
SERVERS = ("daphne", "uvicorn")
PRODUCTION_SERVER = "uvicorn"  # the fastest that passes every integration test (docs/benchmarks.md)
WS_MAX_SIZE = 1 << 20  # bytes per websocket message the server reads at most (daphne's own limit)


GRACEFUL_SHUTDOWN = 10.0  # seconds uvicorn waits for open connections after SIGTERM (unbounded by default)


def server_command(
    server: str, host: str, port: int, app: str = APP, graceful_shutdown: float = GRACEFUL_SHUTDOWN
) -> list[str]:
    """The command line that serves app with server on host:port.

    uvicorn: uvloop and httptools; its websockets-sansio implementation (the faster of its two,
    and its default); messages up to WS_MAX_SIZE; shutdown bounded by graceful_shutdown (uvicorn
    keeps a connection whose websocket handshake was refused open until the client closes it).
    """
    if server == "daphne":
        return [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), app]
    if server == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", app, "--host", host, "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--ws", "websockets-sansio",
            "--ws-max-size", str(WS_MAX_SIZE), "--timeout-graceful-shutdown", f"{graceful_shutdown:g}",
            "--no-access-log", "--log-level", "warning",
        ]
    raise ValueError(f"unknown server {server!r}; one of {', '.join(SERVERS)}")
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # bound to all -> reached on


def local_host(host: str) -> str:
    """The address to reach a server bound to host from this machine."""
    return WILDCARDS.get(host, host)


def url(host: str, port: int) -> str:
    shown = local_host(host)
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def exit_code(returncode: int) -> int:
    """A child's return code as a shell would report it (128 + N for a signal N)."""
    return 128 - returncode if returncode < 0 else returncode


def serve(
    host: str, port: int, app: str = APP, start_timeout: float = START_TIMEOUT, server: str = "daphne"
) -> int:
    """Run the server until it exits; return the exit code for this process."""
    child: subprocess.Popen[bytes] | None = None
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        # Its own session: a terminal's Ctrl-C reaches the server once, forwarded from here.
        child = subprocess.Popen(server_command(server, host, port, app), cwd=ROOT, start_new_session=True)
        if received:  # a signal came before the server existed
            child.send_signal(received[-1])
        try:
            wait_for_port(port, child, start_timeout, host=local_host(host))
        except RuntimeError:  # the server exited before listening: its own output says why
            return exit_code(child.wait())
        except TimeoutError as exc:
            print(f"serve: {exc}; stopping {server}", file=sys.stderr, flush=True)
            return 1
        print(f"chat_ws demo listening on {url(host, port)}", flush=True)
        return exit_code(child.wait())
    finally:
        if child is not None:
            stop(child, timeout=10)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devtools/serve.py", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default %(default)s)")
    parser.add_argument("--app", default=APP, help="ASGI application (default %(default)s)")
    parser.add_argument(
        "--start-timeout", type=float, default=START_TIMEOUT, help="seconds the server may take to listen"
    )
    parser.add_argument("--server", choices=SERVERS, default="daphne", help="ASGI server (default %(default)s)")
    options = parser.parse_args(argv)
    return serve(options.host, options.port, options.app, options.start_timeout, options.server)


if __name__ == "__main__":
    sys.exit(main())
