"""Redis with AOF persistence: what a restart of Redis keeps (docs/operations.md, "Persistence
and restarts"), against the same restart of a Redis without persistence.

Each test runs its own redis-server (tests.redis_util.OwnRedis) and looks only through chat_ws.api,
the websocket and the store's public methods, never at Redis key names. Two ways to restart:

- ``quick``: stop (SIGTERM) and start again while this event loop is blocked, as the other restart
  tests do: chat_ws never sees Redis down, only its connections closed; redis-py's pub/sub
  reconnects on its own, so the askers' periodic check (QUESTION_CHECK_INTERVAL) is what looks for
  lost questions;
- ``outage``: Redis stays down until the settlement listener has noticed, so it re-subscribes once
  Redis is back and checks for lost questions then (the periodic check is switched off).

tests/integration/test_faults.py::test_asker_of_a_question_lost_in_a_restart_gets_store_lost is
the older form of the no-persistence case; here it runs the same steps as the AOF case, so that
the AOF tests are seen to fail without persistence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from chat_ws import api, signals
from chat_ws.exceptions import WS_4001_REPLACED, WS_4003_CLIENT_ID_BOUND, StoreLost, StoreUnavailable
from chat_ws.store import get_store, reset_store
from chat_ws.types import Question
from tests.comm import Comm
from tests.redis_util import OwnRedis, own_redis, own_redis_aof, require_redis_server  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

WAIT = 10.0  # seconds any awaited outcome may take


# ---------------------------------------------------------------- the helper itself


@pytest.mark.parametrize("aof", [True, False])
def test_own_redis_keeps_its_data_across_a_restart_only_with_aof(aof: bool) -> None:
    import redis

    require_redis_server()
    server = OwnRedis(aof=aof)
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set("kept?", "yes")
        client.close()
        server.restart()
        client = redis.Redis.from_url(server.url)
        assert client.get("kept?") == (b"yes" if aof else None)
        assert client.config_get("appendonly")["appendonly"] == ("yes" if aof else "no")
        if aof:
            assert client.config_get("appendfsync")["appendfsync"] == "everysec"
        client.close()
    finally:
        server.cleanup()


# ---------------------------------------------------------------- helpers


class Chat:
    """The Redis store and channel layer on one OwnRedis; the clients and askers of a test, all
    ended afterwards even when the test fails half-way (then nothing is left waiting)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.comms: list[Comm] = []
        self.tasks: list[asyncio.Task[api.Answer]] = []

    async def connect(self, client_id: str | None = None, **kw: Any) -> Comm:
        client = Comm(client_id, **kw)
        self.comms.append(client)
        return await client.connect()

    def ask(self, client: Comm, text: str) -> asyncio.Task[api.Answer]:
        task = asyncio.create_task(api.ask(client.client_id, {"dispatch-key": "iviewr-says", "text": text}))
        self.tasks.append(task)
        return task

    async def end(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), WAIT)
        for client in self.comms:
            with contextlib.suppress(Exception):
                await client.disconnect()


@contextlib.asynccontextmanager
async def chat_on(server: OwnRedis, settings: Any, **conf: Any) -> AsyncIterator[Chat]:
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "chat_ws.layers.RedisChannelLayer", "CONFIG": {"hosts": [server.url]}}
    }
    settings.CHAT_WS = {"REDIS_URL": server.url, **conf}
    reset_store()
    chat = Chat(get_store())
    try:
        yield chat
    finally:
        try:
            await chat.end()
        finally:
            await chat.store.close()
            reset_store()


class QuestionChecks:
    """Every answer the store gives to ``get_question`` (an asker checking that its question still
    exists: the periodic check, or the check after the listener re-subscribes), in order."""

    def __init__(self, store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[str, Question | None]] = []
        self.changed = asyncio.Event()
        original = store.get_question

        async def get_question(p_key: str, client_id: str | None = None) -> Question | None:
            found = await original(p_key, client_id)
            self.seen.append((p_key, found))
            self.changed.set()
            return found

        monkeypatch.setattr(store, "get_question", get_question)

    def mark(self) -> int:
        return len(self.seen)

    async def after(self, mark: int, p_key: str) -> Question | None:
        """The store's answer to the first check of p_key after mark (waits for it)."""
        async with asyncio.timeout(WAIT):
            while True:
                for key, found in self.seen[mark:]:
                    if key == p_key:
                        return found
                self.changed.clear()
                await self.changed.wait()


class _ListenerLost(logging.Handler):
    def __init__(self, event: asyncio.Event) -> None:
        super().__init__(logging.WARNING)
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("settlement listener lost Redis"):
            self.event.set()


@contextlib.contextmanager
def listener_lost() -> Iterator[asyncio.Event]:
    """An event set when the settlement listener logs that it lost Redis (its one signal of it)."""
    event = asyncio.Event()
    handler = _ListenerLost(event)
    logger = logging.getLogger("chat_ws.store.redis_connections")
    logger.addHandler(handler)
    try:
        yield event
    finally:
        logger.removeHandler(handler)


@contextlib.contextmanager
def recovered() -> Iterator[asyncio.Event]:
    """An event set when chat_ws sends store_recovered (the listener re-subscribed)."""
    event = asyncio.Event()

    async def receiver(**kwargs: Any) -> None:
        event.set()

    signals.store_recovered.connect(receiver, weak=False)
    try:
        yield event
    finally:
        signals.store_recovered.disconnect(receiver)


async def store_answers(store: Any) -> None:
    """Wait until the store answers again: a call on a connection the restart closed fails with
    StoreUnavailable and the next one reconnects (one round trip after another, no sleeping)."""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                if await store.check():
                    return
            except StoreUnavailable:
                pass


async def restart(server: OwnRedis, mode: str, checks: QuestionChecks) -> int:
    """Restart Redis gracefully (SIGTERM, start on the same port and directory); return the mark of
    the question checks made after it. ``outage`` also waits for the listener's re-subscription."""
    if mode == "quick":
        server.restart()  # blocks this loop: nothing here sees Redis down
        mark = checks.mark()
        await store_answers(get_store())
        return mark
    with listener_lost() as lost, recovered() as back:
        server.stop()
        await asyncio.wait_for(lost.wait(), WAIT)
        server.start()
        mark = checks.mark()
        await store_answers(get_store())
        await asyncio.wait_for(back.wait(), WAIT)
    return mark


def conf(mode: str) -> dict[str, Any]:
    # quick: the askers' periodic check finds a lost question; outage: only the listener's
    # re-subscription may (the periodic check would come after an hour)
    return {"QUESTION_CHECK_INTERVAL": 0.5 if mode == "quick" else 3600, "SETTLE_WAIT": 0.5}


def keys(message: dict[str, Any]) -> list[str]:
    return [str(k) for k in message["promise-keys"]]


# ---------------------------------------------------------------- pending questions


async def ask_across_a_restart(
    chat: Any, server: OwnRedis, mode: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Any, str, Question | None]:
    """Connect a client, ask it a question, restart Redis: the client, the asker's task, the
    p-key, and what the asker's first check after the restart found."""
    checks = QuestionChecks(chat.store, monkeypatch)
    client = await chat.connect()
    task = chat.ask(client, "still there after a restart?")
    p_key = str((await client.recv())["p-key"])
    mark = await restart(server, mode, checks)
    return client, task, p_key, await checks.after(mark, p_key)


@pytest.mark.parametrize("mode", ["quick", "outage"])
async def test_a_question_pending_across_a_restart_is_answered_after_it(
    own_redis_aof: OwnRedis, settings: Any, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    async with chat_on(own_redis_aof, settings, **conf(mode)) as chat:
        store = chat.store
        client, task, p_key, found = await ask_across_a_restart(chat, own_redis_aof, mode, monkeypatch)

        # the asker's own check, against the restarted Redis, finds the question
        assert found is not None
        assert [q.p_key for q in await store.pending(client.client_id)] == [p_key]
        assert not task.done()

        await client.answer("yes, after the restart")
        cleared = await client.recv()
        assert cleared["dispatch-key"] == "clear-promise-keys" and keys(cleared) == [p_key]
        answer = await asyncio.wait_for(task, WAIT)  # an answer, not StoreLost
        assert (answer.text, answer.p_key) == ("yes, after the restart", p_key)

        # exactly one resolution: the question is gone, a second answer matches nothing
        await client.answer("again", {p_key})
        reply = await client.recv()
        assert (reply["dispatch-key"], reply["error"]) == ("error", "no-matching-question")
        assert await store.pending() == []
        await client.disconnect()


@pytest.mark.parametrize("mode", ["quick", "outage"])
async def test_without_persistence_the_same_restart_fails_the_asker_with_store_lost(
    own_redis: OwnRedis, settings: Any, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    async with chat_on(own_redis, settings, **conf(mode)) as chat:
        store = chat.store
        client, task, p_key, found = await ask_across_a_restart(chat, own_redis, mode, monkeypatch)

        assert found is None
        assert await store.pending(client.client_id) == []
        with pytest.raises(StoreLost):
            await asyncio.wait_for(task, WAIT)

        await client.answer("yes, after the restart", {p_key})
        reply = await client.recv()
        assert (reply["dispatch-key"], reply["error"]) == ("error", "no-matching-question")
        await client.disconnect()


# ---------------------------------------------------------------- presence, bindings, re-send


@pytest.mark.parametrize("socket", ["open", "closed"])
async def test_a_client_reconnecting_after_a_restart_gets_its_question_again(
    own_redis_aof: OwnRedis, settings: Any, monkeypatch: pytest.MonkeyPatch, socket: str
) -> None:
    """The presence record (open, or closed within the reconnect grace) and the client-id's binding
    survive the restart; a reconnect re-sends the pending question with its original p-key."""
    owner = {"session": SimpleNamespace(session_key="s-owner")}
    async with chat_on(own_redis_aof, settings, **conf("quick")) as chat:
        store = chat.store
        checks = QuestionChecks(store, monkeypatch)
        client = await chat.connect(scope=owner)
        task = chat.ask(client, "what do you make?")
        question = await client.recv()
        if socket == "closed":
            await client.disconnect()
        before = await store.connection(client.client_id)
        assert before is not None and before.is_open == (socket == "open")

        await restart(own_redis_aof, "quick", checks)

        assert await store.connection(client.client_id) == before
        intruder = Comm(client.client_id, scope={"session": SimpleNamespace(session_key="s-intruder")})
        assert await intruder.try_connect() == (False, WS_4003_CLIENT_ID_BOUND)

        again = await chat.connect(client.client_id, scope=owner)
        resent = await again.recv()
        assert (resent["text"], str(resent["p-key"])) == ("what do you make?", str(question["p-key"]))
        if socket == "open":
            assert await client.close_code() == WS_4001_REPLACED
        await again.answer("bicycles")
        assert (await asyncio.wait_for(task, WAIT)).text == "bicycles"
        assert keys(await again.recv()) == [str(question["p-key"])]
        await again.disconnect()
