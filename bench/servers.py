"""Servers under test: start and stop them, read their CPU time and memory from /proc."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devtools.processes import free_port, rss_kib, stop, wait_for_port
from devtools.serve import SERVERS, server_command

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 30.0  # seconds a server may take to listen
STOP_TIMEOUT = 15.0  # seconds a server may take to exit after SIGTERM
QUIET_CPU = 0.05  # share of one core below which a server counts as idle
QUIET_WINDOW = 0.3  # seconds over which idleness is measured
QUIET_TIMEOUT = 60.0  # seconds to wait for a server to become idle


def tree(pid: int) -> list[int]:
    """pid and its live descendants (granian serves from a worker process it starts)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:  # exited meanwhile
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants (all threads), from /proc."""
    total = 0
    for member in tree(pid):
        try:
            with open(f"/proc/{member}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / TICKS


def rss_tree_kib(pid: int) -> int:
    """Resident memory of a process and its descendants."""
    total = 0
    for member in tree(pid):
        try:
            total += rss_kib(member)
        except OSError:  # exited meanwhile
            continue
    return total


def wait_quiet(pids: list[int]) -> float:
    """Wait until the processes use less than QUIET_CPU of a core; return the seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < QUIET_TIMEOUT:
        before = sum(cpu_seconds(p) for p in pids)
        time.sleep(QUIET_WINDOW)  # measuring a CPU rate needs an interval
        if sum(cpu_seconds(p) for p in pids) - before < QUIET_CPU * QUIET_WINDOW * len(pids):
            break
    return time.monotonic() - began


class Server:
    """One server process under test."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], port: int, log: Path, cwd: Path = ROOT
    ) -> None:
        self.name, self.argv, self.env, self.port, self.log, self.cwd = name, argv, env, port, log, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Server:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc, START_TIMEOUT)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout=STOP_TIMEOUT)


class Lab:
    """The servers of one benchmark run, sharing a temporary SQLite database and a Redis prefix."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="chat_ws_bench_"))
        self.redis_url = redis_url
        self.prefix = prefix
        self.servers: dict[str, Server] = {}
        self.worktrees: list[Path] = []
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)},
            "DJANGO_SETTINGS_MODULE": "stbd_project.settings",
            "SQLITE_PATH": str(self.dir / "db.sqlite3"),
            "REDIS_URL": redis_url,
            "CHAT_WS_PREFIX": prefix,
            "CHAT_WS_RATE_LIMIT": "1000000",
            "CHAT_WS_RATE_BURST": "1000000",
            "DJANGO_DEBUG": "0",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=self.env, check=True)

    def start(self, name: str, kind: str, *, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Server:
        """kind: daphne, uvicorn or granian (chat_ws's demo), socketio (the reference under
        uvicorn) or socketio-redis (the same with AsyncRedisManager). cwd: the checkout to serve
        (a worktree of an earlier revision for the baseline)."""
        port = free_port()
        bin_dir = Path(sys.executable).parent
        env = {**self.env, **(env or {})}
        if kind in SERVERS:  # chat_ws's demo as make run / make serve start it
            argv = server_command(kind, "127.0.0.1", port)
        elif kind == "uvicorn-websockets":  # uvicorn's older (deprecated) websocket implementation
            argv = [a if a != "websockets-sansio" else "websockets" for a in server_command("uvicorn", "127.0.0.1", port)]
        elif kind == "granian":
            argv = [
                str(bin_dir / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--loop", "uvloop", "--log-level", "warning",
                "stbd_project.asgi:application",
            ]
        else:
            argv = [
                str(bin_dir / "uvicorn"), "bench.socketio_server:app", "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "warning", "--no-access-log",
            ]
            if kind == "socketio-redis":
                env["SIO_REDIS_URL"] = self.redis_url
                env["SIO_CHANNEL"] = f"{self.prefix}:socketio"
        env["PYTHONPATH"] = str(cwd)
        server = Server(name, argv, env, port, self.dir / f"{name}.log", cwd=cwd).start()
        self.servers[name] = server
        return server

    def worktree(self, rev: str) -> Path:
        """A detached checkout of rev beside this run (removed by cleanup), for the baseline."""
        path = self.dir / f"baseline-{rev.replace('/', '_')}"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(path), rev], cwd=ROOT, check=True)
        self.worktrees.append(path)
        return path

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

    def cleanup(self, keep_logs: Path | None = None) -> int:
        """Delete this run's Redis keys (its prefix only) and the temporary directory (its server
        logs copied to keep_logs first, when given)."""
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for log in self.dir.glob("*.log"):
                shutil.copy(log, keep_logs / log.name)
        import redis

        client: Any = redis.Redis.from_url(self.redis_url)
        deleted = 0
        for key in client.scan_iter(match=f"{self.prefix}:*", count=1000):
            deleted += client.delete(key)
        client.close()
        for path in self.worktrees:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        return deleted

    def redis_pid(self) -> int | None:
        import redis

        try:
            info: Any = redis.Redis.from_url(self.redis_url).info("server")
            pid = int(info["process_id"])
            return pid if os.path.exists(f"/proc/{pid}") else None
        except Exception:
            return None
