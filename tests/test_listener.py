"""The settlement listener notices a Redis that went silent without closing its socket (a host
lost without a reset, here a SIGSTOPped server), subscribes again once it answers, and tells its
callback, so the process's askers check their questions."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import pytest

from chat_ws.conf import DEFAULTS
from chat_ws.store import redis_connections
from chat_ws.store.redis import RedisStore
from tests.redis_util import OwnRedis, own_redis  # noqa: F401 (fixture)

pytestmark = pytest.mark.redis

WAIT = 10.0


class _Lost(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("settlement listener lost Redis"):
            self.event.set()


async def test_a_silent_redis_is_left_and_subscribed_to_again(own_redis: OwnRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_connections, "PING_EVERY", 0.1)
    monkeypatch.setattr(redis_connections, "SILENCE_LIMIT", 0.5)
    store = RedisStore({**DEFAULTS, "REDIS_URL": own_redis.url, "KEY_PREFIX": "listener"})
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lost = _Lost()
    logging.getLogger("chat_ws.store.redis_connections").addHandler(lost)
    assert own_redis.proc is not None
    try:
        await store.subscribe("srv-silent", received.put)
        assert await store.publish("srv-silent", {"n": 1}) == 1
        assert await asyncio.wait_for(received.get(), WAIT) == {"n": 1}
        own_redis.proc.send_signal(signal.SIGSTOP)  # the socket stays open; nothing answers
        try:
            await asyncio.wait_for(lost.event.wait(), WAIT)
        finally:
            own_redis.proc.send_signal(signal.SIGCONT)
        assert await asyncio.wait_for(received.get(), WAIT) == {"event": "resubscribed"}
        assert await store.publish("srv-silent", {"n": 2}) == 1
        assert await asyncio.wait_for(received.get(), WAIT) == {"n": 2}
    finally:
        logging.getLogger("chat_ws.store.redis_connections").removeHandler(lost)
        await store.close()
