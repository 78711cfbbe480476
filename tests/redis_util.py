"""Finding the test Redis: a separate database number and a per-test key prefix."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse, urlunparse

import pytest

from devtools.processes import free_port, wait_for_port, wait_for_redis


def test_redis_url() -> str:
    """REDIS_URL (default redis://127.0.0.1:6379) with the test database number (default 15)."""
    base = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379"
    db = os.environ.get("CHAT_WS_TEST_REDIS_DB", "15")
    parts = urlparse(base)
    return urlunparse(parts._replace(path=f"/{db}"))


def require_redis() -> str:
    """Return the test Redis URL; skip (laptop) or fail (CI=true) when it does not answer."""
    import redis

    url = test_redis_url()
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        reason = f"Redis not reachable at {url}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: Redis tests must run)", pytrace=False)
        pytest.skip(reason)
    return url


def delete_prefix(url: str, prefix: str) -> None:
    """Delete the keys under one test prefix, and nothing else."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


class OwnRedis:
    """A redis-server of the test's own that the test may stop, kill and start again.

    Without persistence by default: a restart starts empty. With ``aof=True`` it runs with
    ``appendonly yes`` and ``appendfsync everysec`` (no RDB snapshots) in its own directory, so
    ``stop()`` (SIGTERM: Redis writes and fsyncs the AOF before it exits) then ``start()`` reloads
    the data. ``extra``: more redis-server arguments (a password, TLS). The port and the directory
    stay the same across restarts.
    """

    def __init__(self, *extra: str, aof: bool = False) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="chat_ws_redis_")
        self.extra = list(extra)
        self.aof = aof
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, port_arg: str = "--port") -> None:
        """Start the server; with ``aof`` return once it has loaded its data and answers."""
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.aof else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            ["redis-server", port_arg, str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
             "--dir", self.dir, *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc, 10)
        if self.aof:
            wait_for_redis(self.port, self.proc, 10)  # and its data loaded

    def restart(self) -> None:
        """A graceful restart: SIGTERM, then a new server on the same port and directory."""
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-reply, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def require_redis_server() -> None:
    """Skip (laptop) or fail (CI=true) when the redis-server binary is missing."""
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: Redis tests must run)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    """A private redis-server on a free port, stopped after the test."""
    require_redis_server()
    server = OwnRedis()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def own_redis_aof() -> Iterator[OwnRedis]:
    """A private redis-server with AOF persistence (appendfsync everysec), stopped after the test."""
    require_redis_server()
    server = OwnRedis(aof=True)
    server.start()
    yield server
    server.cleanup()


async def blocked_clients(url: str, count: int = 1, timeout: float = 5.0) -> None:
    """Wait until at least count clients of the Redis at url are blocked in a command (a BRPOP
    under way): asked one round trip after another, never by sleeping."""
    import asyncio

    import redis.asyncio

    probe: Any = redis.asyncio.Redis.from_url(url)
    try:
        async with asyncio.timeout(timeout):
            while int((await probe.info("clients"))["blocked_clients"]) < count:
                pass
    finally:
        await probe.aclose()
