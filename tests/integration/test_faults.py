"""Broken infrastructure: Redis unreachable at start, Redis restarted mid-conversation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import websockets

from devtools.processes import free_port
from tests.live import LiveServer
from tests.redis_util import OwnRedis, own_redis  # noqa: F401 (fixture)
from tests.wsclient import WsClient

pytestmark = [pytest.mark.integration, pytest.mark.redis]


def test_unreachable_redis_fails_the_system_check(live_db: Any) -> None:
    server = LiveServer(live_db, redis_url=f"redis://127.0.0.1:{free_port()}/0", prefix="unused")
    result = server.manage("check", "--database", "default")
    assert result.returncode != 0
    assert "chat_ws.E005" in result.stderr and "unreachable" in result.stderr
    assert "Traceback" not in result.stderr


async def test_unreachable_redis_refuses_sockets_with_one_log_line(live_db: Any, own_redis: OwnRedis) -> None:
    server = LiveServer(live_db, redis_url=own_redis.url, prefix="faults", LOG_LEVEL="WARNING").start()
    try:
        own_redis.stop()
        for _ in range(3):
            with pytest.raises((websockets.InvalidStatus, websockets.ConnectionClosed, OSError)):
                async with WsClient(server.ws_url) as client:
                    await client.send({"dispatch-key": "ping"})
                    await client.recv()
        log = server.log()
        assert "Traceback" not in log, log[-3000:]
        assert log.count("refusing") >= 1
    finally:
        server.stop()


async def test_redis_restart_mid_conversation(live_db: Any, own_redis: OwnRedis) -> None:
    server = LiveServer(live_db, redis_url=own_redis.url, prefix="faults").start()
    try:
        client = await WsClient(server.ws_url).connect()
        await client.send({"dispatch-key": "start-conversation"})
        lost = await client.next_question()

        own_redis.stop()  # no persistence: every question and presence record is gone
        own_redis.start()

        # The socket either survived or was closed; a browser reconnects either way.
        try:
            await client.send({"dispatch-key": "ping", "ping-id": 1})
            reply = await client.recv_until("ping-confirm", timeout=10)
            survivor = client
        except (websockets.ConnectionClosed, TimeoutError):
            survivor = await WsClient(server.ws_url, client.client_id).connect()
        assert reply["ping-id"] == 1 if survivor is client else True

        # New questions work once Redis is back.
        await survivor.send({"dispatch-key": "start-conversation"})
        fresh = await survivor.next_question(timeout=10)
        assert fresh["p-key"] != lost["p-key"]
        await survivor.answer("after the restart")
        await survivor.recv_until("clear-promise-keys", timeout=10)
        await survivor.next_question(timeout=10)
        await survivor.close()
    except BaseException:
        print(server.log()[-6000:])
        raise
    finally:
        server.stop()


@pytest.mark.django_db(transaction=True)
async def test_asker_of_a_question_lost_in_a_restart_gets_store_lost(
    own_redis: OwnRedis, settings: Any
) -> None:
    from chat_ws import api
    from chat_ws.exceptions import StoreLost
    from chat_ws.store import get_store, reset_store
    from tests.comm import Comm

    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "chat_ws.layers.RedisChannelLayer", "CONFIG": {"hosts": [own_redis.url]}}
    }
    settings.CHAT_WS = {"REDIS_URL": own_redis.url, "QUESTION_CHECK_INTERVAL": 0.5}
    reset_store()
    try:
        client = await Comm().connect()
        task = asyncio.create_task(api.ask(client.client_id, {"dispatch-key": "iviewr-says", "text": "lost?"}))
        await client.recv()
        own_redis.stop()  # no persistence: the question is gone
        own_redis.start()
        with pytest.raises(StoreLost):
            await asyncio.wait_for(task, 10)
        await client.disconnect()
    finally:
        await get_store().close()
        reset_store()
