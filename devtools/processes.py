"""Process utilities shared by the tests, the benchmarks and the load test.

Free ports, waiting for a listener (or for a Redis to answer), stopping a child, a process's resident memory and the
open-files limit. Linux only where /proc is read.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import subprocess
import time
from typing import Any

logger = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"
PORT_POLL = 0.05  # seconds between connection attempts while waiting for a listener
STOP_TIMEOUT = 10.0  # seconds a process may take to exit after a signal before it is killed


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def accepts(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    """True when something accepts a TCP connection on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    port: int, proc: subprocess.Popen[Any] | None = None, timeout: float = 30.0, *, host: str = LOCALHOST
) -> None:
    """Block until something accepts on the port; raise if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on port {port}")
        if accepts(port, host):
            return
        time.sleep(PORT_POLL)  # polling a port: the event is the listen() we cannot subscribe to
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def wait_for_redis(
    port: int, proc: subprocess.Popen[Any] | None = None, timeout: float = 30.0, *, host: str = LOCALHOST, log: Any = None
) -> None:
    """Block until a redis-server answers PING: it listens and has loaded its data (no LOADING).
    Raise if the process died (naming ``log``, when given) or time ran out."""
    import redis

    client = redis.Redis(host=host, port=port, socket_timeout=2, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                if proc is not None and proc.poll() is not None:
                    where = f"; see {log}" if log else ""
                    raise RuntimeError(f"redis-server exited with {proc.returncode}{where}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(PORT_POLL)  # polling a starting server: there is no event to wait on
    finally:
        client.close()


def stop(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT, *, group: bool = False
) -> int:
    """Send sig to the process (by its pid) and wait for it; kill it after timeout. Its exit code.

    With ``group`` the signals go to the process group the process leads (started with
    ``start_new_session=True``), so that its children stop with it.
    """

    def send(signum: int) -> None:
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)

    if proc.poll() is None:
        send(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            proc.wait(timeout=timeout)
    return int(proc.returncode)


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB, from /proc (OSError when it cannot be read)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ProcessLookupError(f"no VmRSS for process {pid} (a zombie or a kernel thread)")


def raise_fd_limit(needed: int = 0) -> tuple[int, int]:
    """Raise this process's soft limit of open files up to the hard limit; return (soft, hard).

    With no hard limit the soft limit is raised to ``needed`` when it is lower.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return soft, hard
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            logger.warning("could not raise the open-files limit from %d to %d", soft, target)
    return soft, hard
