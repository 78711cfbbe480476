"""The chaos run's private world: its own Redis (AOF), database and demo-server processes.

Everything lives under one temporary directory and is started by this module, each process in
a session of its own (``start_new_session``), so that it is stopped by its process group and by
nothing broader. :meth:`ChaosEnv.close` stops what is still running, drops the database and
removes the directory; it is safe to call twice and after a partial start.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devtools.processes import LOCALHOST, free_port, wait_for_port, wait_for_redis
from devtools.serve import server_command
from loadtest.ledger import Row

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
POSTGRES_ADMIN = "postgres://postgres@127.0.0.1:5432"  # trust auth on the local server
START_TIMEOUT = 60.0  # seconds a demo server may take to listen (a loaded 2-core machine)
REDIS_TIMEOUT = 20.0  # seconds Redis may take to exit, or to answer PING after a start
STOP_TIMEOUT = 15.0  # seconds a server may take to exit at the end of the run before SIGKILL
# Variables of the caller that would point the servers elsewhere.
FOREIGN = ("REDIS_URL", "REDIS_CLUSTER", "CHANNEL_LAYER_URLS", "DATABASE_URL", "SQLITE_PATH")


def _group_signal(proc: subprocess.Popen[Any], sig: int) -> None:
    """Signal the process group the tool made for proc (start_new_session)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _wait(proc: subprocess.Popen[Any], timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


class PrivateRedis:
    """redis-server on a free port of 127.0.0.1 with AOF (appendfsync everysec) in its own dir."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.dir = root / "redis"
        self.dir.mkdir()
        self.log = root / "logs" / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def start(self) -> None:
        """Start it; return once it answers PING (its AOF loaded)."""
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", LOCALHOST, "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.dir),
             "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_for_redis(self.port, self.proc, REDIS_TIMEOUT, log=self.log)

    def stop(self) -> None:
        """SIGTERM (Redis fsyncs its AOF and exits), SIGKILL after REDIS_TIMEOUT."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            if not _wait(self.proc, REDIS_TIMEOUT):
                _group_signal(self.proc, signal.SIGKILL)
                self.proc.wait()

    def restart(self) -> float:
        """Stop, then start on the same port and AOF dir; the seconds it did not answer."""
        began = time.monotonic()
        self.stop()
        self.start()
        return time.monotonic() - began


class DemoServer:
    """One demo-site process on a fixed port, started again after every stop."""

    def __init__(self, index: int, kind: str, env: dict[str, str], logs: Path) -> None:
        self.index = index
        self.kind = kind
        self.port = free_port()
        self.env = env
        self.logs = logs
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.busy = False  # a fault is stopping or restarting it

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOCALHOST}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the process (its own session, its own log file) and wait until it listens."""
        self.starts += 1
        log_path = self.logs / f"server{self.index}-{self.kind}-{self.port}-{self.starts:03d}.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                server_command(self.kind, LOCALHOST, self.port),
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_for_port(self.port, self.proc, START_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL its process group."""
        if self.proc is not None:
            _group_signal(self.proc, signal.SIGKILL)
            self.proc.wait()

    def term(self, bound: float) -> tuple[float, bool]:
        """SIGTERM its group and wait for the exit: (seconds it took, killed after ``bound``)."""
        assert self.proc is not None
        began = time.monotonic()
        _group_signal(self.proc, signal.SIGTERM)
        if _wait(self.proc, bound):
            return time.monotonic() - began, False
        _group_signal(self.proc, signal.SIGKILL)
        self.proc.wait()
        return time.monotonic() - began, True

    def stop(self) -> None:
        if self.up:
            self.term(STOP_TIMEOUT)


class Sweeper:
    """``manage.py chat_ws_sweep --loop``, as production runs it beside the servers (not faulted)."""

    INTERVAL = 1.0  # seconds between passes

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        with open(self.logs / "server-sweeper.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "chat_ws_sweep", "--loop", "--interval", f"{self.INTERVAL:g}"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _group_signal(self.proc, signal.SIGTERM)
            if not _wait(self.proc, STOP_TIMEOUT):
                _group_signal(self.proc, signal.SIGKILL)
                self.proc.wait()


class RunDatabase:
    """A PostgreSQL database made for the run (dropped afterwards), or a SQLite file."""

    def __init__(self, root: Path, name: str, admin_url: str = POSTGRES_ADMIN) -> None:
        self.name = name
        self.admin_url = admin_url
        self.sqlite = root / "db.sqlite3"
        self.kind = ""
        self.url = ""
        self.note = ""

    def create(self) -> None:
        try:
            import psycopg

            with psycopg.connect(self.admin_url + "/postgres", autocommit=True, connect_timeout=3) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
            self.kind, self.url = "postgresql", f"{self.admin_url}/{self.name}"
        except Exception as exc:  # unreachable, no driver, no rights: the run still works on SQLite
            self.kind, self.url = "sqlite", f"sqlite:///{self.sqlite}"
            self.note = f"PostgreSQL unavailable ({type(exc).__name__}: {str(exc).strip()[:120]}); using SQLite"

    def _select(self, columns: str, table: str, prefix: str, more: str = "") -> list[Any]:
        """Rows of a table whose client_id starts with prefix (the run's clients)."""
        query = f"SELECT {columns} FROM {table} WHERE substr(client_id, 1, {len(prefix)}) = %s {more}"
        if self.kind == "postgresql":
            import psycopg

            with psycopg.connect(self.url, connect_timeout=5) as conn:
                return conn.execute(query, (prefix,)).fetchall()  # type: ignore[arg-type]
        with sqlite3.connect(self.sqlite) as conn:
            return conn.execute(query.replace("%s", "?"), (prefix,)).fetchall()

    def open_sessions(self, prefix: str, limit: int = 10) -> list[str]:
        """The first ClientSession rows of the run's clients that are not closed, described."""
        found = self._select(
            "client_id, server_id, opened_at", "chat_ws_clientsession", prefix,
            f"AND closed_at IS NULL ORDER BY opened_at LIMIT {int(limit)}",
        )  # fmt: skip
        return [f"{cid} opened {opened} by {server}" for cid, server, opened in found]

    def rows(self, prefix: str) -> list[Row]:
        """The interview rows of client-ids starting with prefix."""
        found = self._select("client_id, answers, finished", "interview_interview", prefix)
        return [
            Row(str(cid), json.loads(answers) if isinstance(answers, str) else list(answers), bool(done))
            for cid, answers, done in found
        ]

    def drop(self) -> None:
        if self.kind != "postgresql":
            return
        import psycopg

        try:
            with psycopg.connect(self.admin_url + "/postgres", autocommit=True, connect_timeout=3) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        except Exception:
            logger.exception("could not drop the run's database %s", self.name)
        self.kind = ""


class ChaosEnv:
    """Redis, database and K servers of one run, under one temporary directory."""

    def __init__(
        self, run_id: str, servers: int, server: str, *, log_level: str = "INFO",
        postgres: str = POSTGRES_ADMIN,
    ) -> None:  # fmt: skip
        self.run_id = run_id
        self.root = Path(tempfile.mkdtemp(prefix=f"chat_ws_chaos_{run_id}_"))
        self.logs = self.root / "logs"
        self.logs.mkdir()
        self.key_prefix = f"chaos_{run_id}"  # CHAT_WS_PREFIX: the store's keys and the layer's
        self.token = f"chaos-{run_id}-{os.urandom(8).hex()}"
        self.redis = PrivateRedis(self.root)
        self.db = RunDatabase(self.root, f"chat_ws_chaos_{run_id}", postgres)
        self.log_level = log_level
        kinds = ["uvicorn", "daphne"] if server == "mixed" else [server]
        self.servers = [DemoServer(i, kinds[i % len(kinds)], {}, self.logs) for i in range(servers)]
        self.sweeper = Sweeper(self.logs)
        self.closed = False

    def server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN and not k.startswith("CHAT_WS_")}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "stbd_project.settings",
                "REDIS_URL": self.redis.url,
                "DATABASE_URL": self.db.url,
                "CHAT_WS_PREFIX": self.key_prefix,
                "CHAT_WS_HEALTH_TOKEN": self.token,
                "CHAT_WS_RATE_LIMIT": "100000",
                "CHAT_WS_RATE_BURST": "100000",
                "DJANGO_DEBUG": "0",
                "SERVE_STATIC": "1",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "PYTHONUNBUFFERED": "1",
                "LOG_LEVEL": self.log_level,
                # Faster than production's defaults, so that the settle sees recovery finish: an
                # answer its asker did not consume is handed over after 3 s, and an asker checks
                # its question every 3 s.
                "CHAT_WS_ANSWER_CONSUME_TIMEOUT": "3",
                "CHAT_WS_QUESTION_CHECK_INTERVAL": "3",
                # A pass cut short by the Redis restart cannot release its lock; it lapses in 5 s
                # here instead of 60, so the settle sees the sweep again.
                "CHAT_WS_SWEEP_LOCK_TTL": "5",
            }
        )
        return env

    def start(self) -> None:
        """Redis, the database (migrated once), then every server."""
        self.redis.start()
        self.db.create()
        env = self.server_env()
        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if migrate.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{(migrate.stdout + migrate.stderr)[-3000:]}")
        for server in self.servers:
            server.env = env
            server.start()
        self.sweeper.start(env)

    def stop_servers(self) -> None:
        self.sweeper.stop()
        for server in self.servers:
            try:
                server.stop()
            except Exception:
                logger.exception("stopping %s", server.name)

    def keep_logs(self, target: Path) -> Path:
        """Copy the logs of every process start (and Redis's) to target."""
        target.mkdir(parents=True, exist_ok=True)
        for path in self.logs.iterdir():
            shutil.copy2(path, target / path.name)
        return target

    def close(self) -> None:
        """Stop everything still running, drop the database, remove the directory."""
        if self.closed:
            return
        self.closed = True
        self.stop_servers()
        for server in self.servers:
            if server.proc is not None and server.proc.poll() is None:
                server.kill()
        try:
            self.redis.stop()
        except Exception:
            logger.exception("stopping the run's Redis")
        self.db.drop()
        shutil.rmtree(self.root, ignore_errors=True)
