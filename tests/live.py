"""Real servers for integration tests: demo-site processes on free ports, talked to over TCP.

The server (daphne or uvicorn) comes from ``CHAT_WS_TEST_SERVER`` (default daphne); the
integration tests run under each (tests/integration/conftest.py), started as ``make run`` and
``make serve`` start them (devtools.serve.server_command).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from devtools.processes import free_port, stop, wait_for_port
from devtools.serve import server_command

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0  # seconds a server may take to accept connections
GRACEFUL_SHUTDOWN = 1.0  # seconds uvicorn waits for a test's lingering connections when stopped


class Database:
    """A migrated SQLite file shared by the servers of one test session."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="chat_ws_live_"))
        self.path = self.dir / "db.sqlite3"
        env = base_env(self.path, None, "unused")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120
        )

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def base_env(db_path: Path, redis_url: str | None, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "stbd_project.settings",
            "SQLITE_PATH": str(db_path),
            "CHAT_WS_PREFIX": prefix,
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": os.environ.get("LIVE_LOG_LEVEL", "WARNING"),
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


def server_kind() -> str:
    """The ASGI server integration tests start (CHAT_WS_TEST_SERVER, default daphne)."""
    return os.environ.get("CHAT_WS_TEST_SERVER", "daphne")


class LiveServer:
    """One server process serving the demo site."""

    def __init__(
        self, db: Database, *, redis_url: str | None, prefix: str, port: int | None = None, **env: str
    ) -> None:
        self.server = server_kind()
        self.db = db
        self.redis_url = redis_url
        self.prefix = prefix
        self.port = port or free_port()
        self.env = base_env(db.path, redis_url, prefix, **env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = db.dir / f"{self.server}-{self.port}.log"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            server_command(self.server, "127.0.0.1", self.port, graceful_shutdown=GRACEFUL_SHUTDOWN),
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_port(self.port, self.proc, START_TIMEOUT)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop(self.proc, sig)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def manage(self, *args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a management command against the same database and Redis as this server."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
