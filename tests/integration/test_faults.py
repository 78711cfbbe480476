"""Broken infrastructure: Redis unreachable at start, Redis restarted mid-conversation."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from tests.live import LiveServer, free_port, wait_for_port
from tests.wsclient import WsClient

pytestmark = [pytest.mark.integration, pytest.mark.redis]


class OwnRedis:
    """A redis-server of the test's own, without persistence, that the test may stop and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="chat_ws_redis_")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc, 10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_for_log(server: LiveServer, text: str, timeout: float) -> None:
    """Block until the server's log shows text (another process's event, read from its log)."""
    deadline = time.monotonic() + timeout
    while text not in server.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged within {timeout}s:\n{server.log()[-3000:]}")
        time.sleep(0.05)  # polling a file: the log line is the event


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis()
    server.start()
    yield server
    server.cleanup()


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
    server = LiveServer(live_db, redis_url=own_redis.url, prefix="faults", LOG_LEVEL="INFO",
                        CHAT_WS_QUESTION_CHECK_INTERVAL="0.5").start()
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

        # The asker of the lost question is told, within its check interval.
        wait_for_log(server, "process stopped: StoreLost", timeout=10)

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
