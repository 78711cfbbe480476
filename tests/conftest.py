"""Fixtures shared by the whole suite."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.cluster_util import layer_hosts, redis_cluster  # noqa: F401 (session fixtures)
from tests.redis_util import delete_prefix, require_redis


@pytest.fixture
def redis_url() -> str:
    """The test Redis URL (database 15 by default)."""
    return require_redis()


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis key prefix of this test only; its keys are deleted afterwards."""
    prefix = f"chat_ws_test:{uuid.uuid4().hex[:12]}"
    yield prefix
    url = getattr(request.node, "_chat_ws_redis_url", None)
    if url:
        delete_prefix(url, prefix)


def _chat_ws_conf(**overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"HANDLER_MODULES": ["stbd_project.interview.handlers"]}
    conf.update(overrides)
    return conf


@pytest.fixture(params=["memory", "redis", "cluster"])
def backend(request: pytest.FixtureRequest, settings: Any, key_prefix: str) -> Iterator[str]:
    """Run the test with the in-memory store and layer; with one Redis for both; and with the
    store on a local 3-master Redis Cluster and the layer sharded over two Redis servers (these
    are private to the test session: nothing is cleaned up in them)."""
    from chat_ws import store as store_module

    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        hosts = request.getfixturevalue("layer_hosts")
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "chat_ws.layers.RedisChannelLayer",
                "CONFIG": {"hosts": list(hosts.urls), "prefix": key_prefix + ":layer:"},
            }
        }
        settings.CHAT_WS = _chat_ws_conf(REDIS_URL=cluster.url, REDIS_CLUSTER=True, KEY_PREFIX=key_prefix)
    elif request.param == "redis":
        url = require_redis()
        request.node._chat_ws_redis_url = url
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "chat_ws.layers.RedisChannelLayer",
                "CONFIG": {"hosts": [url], "prefix": key_prefix + ":layer:"},
            }
        }
        settings.CHAT_WS = _chat_ws_conf(REDIS_URL=url, KEY_PREFIX=key_prefix)
    else:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
        settings.CHAT_WS = _chat_ws_conf()
    store_module.reset_store()
    yield request.param
    store_module.reset_store()


@pytest.fixture
async def store(backend: str) -> AsyncIterator[Any]:
    """The configured store of the current backend, closed after the test."""
    from chat_ws.store import get_store

    found = get_store()
    yield found
    await found.close()
    current = get_store()
    if current is not found:
        await current.close()


@pytest.fixture(autouse=True)
async def _session_rows_written(_django_db_marker: None) -> AsyncIterator[None]:
    """Session rows queued by a test are written before its database is torn down."""
    yield
    import asyncio

    from chat_ws import sessions

    if asyncio.get_running_loop() in sessions._writers:
        await asyncio.wait_for(sessions.flush(), 10)


@pytest.fixture(autouse=True)
def _clean_process_state() -> Iterator[None]:
    """Each test starts with no local sockets, waiters or grace timers left by another."""
    yield
    from chat_ws.testing import reset

    reset()


def chat_ws_settings(settings: Any, **overrides: Any) -> None:
    """Change chat_ws settings for one test, keeping the backend the fixture chose."""
    conf = dict(settings.CHAT_WS)
    conf.update(overrides)
    settings.CHAT_WS = conf
    from chat_ws import store as store_module

    store_module.reset_store()


@pytest.fixture(scope="session")
def live_db() -> Iterator[Any]:
    """A migrated SQLite database for the servers of this session."""
    from tests.live import Database

    db = Database()
    yield db
    db.cleanup()


@pytest.fixture
def live_servers(
    request: pytest.FixtureRequest, live_db: Any, key_prefix: str
) -> Iterator[Any]:
    """Start demo-site daphne processes: ``live_servers(redis=True, **env)``; all stop afterwards."""
    from tests.live import LiveServer

    started: list[LiveServer] = []

    def start(*, redis: bool, **env: str) -> LiveServer:
        url = None
        if redis:
            url = require_redis()
            request.node._chat_ws_redis_url = url
        server = LiveServer(live_db, redis_url=url, prefix=key_prefix, **env)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
    if request.node.rep_call_failed if hasattr(request.node, "rep_call_failed") else False:
        for server in started:
            print(f"--- log of server on port {server.port} ---\n{server.log()[-5000:]}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call_failed = report.failed
