"""The bad-input catalogue: each class over a real socket, with its documented outcome.

After every case the server still serves a fresh client and holds no leaked record.
"""

from __future__ import annotations

import re

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
import websockets

from chat_ws.exceptions import WS_4008_POLICY_VIOLATION, WS_4009_MESSAGE_TOO_BIG
from tests.wsclient import WsClient

pytestmark = [pytest.mark.integration, pytest.mark.redis]


@dataclass
class Case:
    name: str
    frames: list[str | bytes] | None = None  # sent on an open socket (EDN unless json)
    error: str | None = None  # expected :error of the reply
    reason: str | None = None  # expected :reason of a malformed-message reply
    close: set[int] | None = None  # expected close codes instead of a reply
    json: bool = False


DEEP_SMALL = "{:dispatch-key :ping :x " + "[" * 20000 + "]" * 20000 + "}"
CASES = [
    Case("malformed EDN", ["{:dispatch-key"], "malformed-message", "malformed-edn"),
    Case("malformed JSON", ['{"dispatch-key":'], "malformed-message", "malformed-json", json=True),
    Case("EDN that is not a map", ["[1 2 3]"], "malformed-message", "not-a-map"),
    Case("JSON that is not an object", ["[1, 2]"], "malformed-message", "not-a-map", json=True),
    Case("a bare scalar", ["42"], "malformed-message", "not-a-map"),
    Case("an empty frame", [""], "malformed-message"),
    Case("two forms in one frame", ["{:dispatch-key :ping} {:x 1}"], "malformed-message"),
    Case("no dispatch-key", ['{:msg-text "hi"}'], "malformed-message", "missing-dispatch-key"),
    Case("dispatch-key of the wrong type", ["{:dispatch-key 42}"], "malformed-message", "missing-dispatch-key"),
    Case("promise-keys a string", ['{:dispatch-key :domain-expert-says :msg-text "a" :promise-keys "promise-1"}'],
         "malformed-message", "bad-field"),
    Case("msg-text a map", ["{:dispatch-key :domain-expert-says :msg-text {:a 1} :promise-keys #{:p}}"],
         "malformed-message", "bad-field"),
    Case("reader eval #=", ["{:dispatch-key :ping :x #=(+ 1 2)}"], "malformed-message"),
    Case("unknown tag", ["{:dispatch-key :ping :x #evil/tag 1}"], "malformed-message"),
    Case("#inst garbage", ['{:dispatch-key :ping :x #inst "garbage"}'], "malformed-message"),
    Case("huge integer", ["{:dispatch-key :ping :x " + "9" * 5000 + "}"], "malformed-message"),
    Case("EDN NaN", ["{:dispatch-key :ping :x ##NaN}"], "malformed-message"),
    Case("JSON NaN", ['{"dispatch-key": "ping", "x": NaN}'], "malformed-message", json=True),
    Case("deep nesting under the size limit", [DEEP_SMALL], "malformed-message", "too-deep"),
    Case("100,000 levels of nesting", ["[" * 100000 + "]" * 100000], close={1009, WS_4009_MESSAGE_TOO_BIG}),
    Case("frame over the size limit", ['{:dispatch-key :ping :pad "' + "x" * 70000 + '"}'],
         close={1009, WS_4009_MESSAGE_TOO_BIG}),
    Case("binary frame", [b"\x00\x01\x02"], "binary-frame"),
    Case("unknown dispatch-key", ["{:dispatch-key :launch-missiles}"], "unknown-dispatch-key"),
    Case("a handler that raises", ["{:dispatch-key :test-raise}"], "handler-failed"),
    Case("answer with an empty key set", ['{:dispatch-key :domain-expert-says :msg-text "a" :promise-keys #{}}'],
         "no-matching-question"),
    Case("thousands of keys in one answer",
         ['{:dispatch-key :domain-expert-says :msg-text "a" :promise-keys #{'
          + " ".join(f":k{i}" for i in range(5000)) + "}}"], "no-matching-question"),
    Case("lone surrogate escape", ['{:dispatch-key :ping :x "\\ud800"}'], "malformed-message"),
]


@pytest.fixture
def server(live_servers: Any) -> Any:
    return live_servers(redis=True, CHAT_WS_EXTRA_HANDLERS="tests.handlers_for_tests")


async def leaked_records(server: Any) -> dict[str, int]:
    """Records under the server's prefix that no test client should have left behind."""
    client = aioredis.Redis.from_url(server.redis_url)
    try:
        keys = [k.decode() async for k in client.scan_iter(match=f"{server.prefix}:*")]
        bucket = re.escape(server.prefix) + r":\{\d+\}:"
        questions = sum([await client.hlen(k) for k in keys if re.match(bucket + r"q\Z", k)])
        no_ttl = [
            k for k in keys
            if await client.pttl(k) == -1
            and not re.match(bucket + r"(q|seq|idx:.*)\Z", k)  # the documented keys without a TTL
            and not k.startswith(f"{server.prefix}:layer")
        ]
        return {"questions": questions, "keys_without_ttl": len(no_ttl)}
    finally:
        await client.aclose()


async def still_serves(server: Any) -> None:
    async with WsClient(server.ws_url) as fresh:
        await fresh.send({"dispatch-key": "ping", "ping-id": 99})
        assert (await fresh.recv())["dispatch-key"] == "ping-confirm"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_bad_frame(server: Any, case: Case) -> None:
    async with WsClient(server.ws_url, json=case.json) as client:
        for frame in case.frames or []:
            await client.send_raw(frame)
        if case.close:
            assert await client.closed() in case.close
        else:
            reply = await client.recv()
            assert reply["dispatch-key"] == "error", reply
            assert reply["error"] == case.error, reply
            if case.reason:
                assert reply["reason"] == case.reason, reply
            await client.send({"dispatch-key": "ping", "ping-id": 1})
            assert (await client.recv_until("ping-confirm"))["ping-id"] == 1
    await still_serves(server)
    assert await leaked_records(server) == {"questions": 0, "keys_without_ttl": 0}


async def test_invalid_utf8_in_a_text_frame(server: Any) -> None:
    async with WsClient(server.ws_url) as client:
        client.ws.protocol.send_text(b"{:dispatch-key :ping :x \"\xff\xfe\"}")
        client.ws.send_data()
        # The websocket layer refuses it (RFC 6455 8.1): 1007, or under daphne a dropped connection.
        assert await client.closed() in (None, 1007)
    await still_serves(server)


async def test_flood_gets_errors_then_a_close(server: Any, asgi_server: str) -> None:
    async with WsClient(server.ws_url) as client:
        frame = f'{{:dispatch-key :ping :client-id "{client.client_id}"}}'
        for _ in range(400):
            try:
                await client.send_raw(frame)
            except websockets.ConnectionClosed:
                break
        kinds: dict[str, int] = {}
        try:
            while True:
                message = await client.recv()
                kinds[message["dispatch-key"]] = kinds.get(message["dispatch-key"], 0) + 1
        except websockets.ConnectionClosed as exc:
            expected = WS_4008_POLICY_VIOLATION if asgi_server == "daphne" else 1008  # daphne: 4xxx twin
            assert exc.rcvd is not None and exc.rcvd.code == expected
        assert kinds.get("ping-confirm", 0) >= 60  # the burst
        assert kinds.get("error", 0) >= 1
    await still_serves(server)


@pytest.mark.parametrize(
    "query",
    ["", "?client-id=", "?client-id=" + "a" * 10000, "?client-id=..%2F..%2Fetc%2Fpasswd", "?client-id=a%0Ab",
     "?client-id=a%00b", "?client-id=%E2%98%83"],
    ids=["missing", "empty", "10000 chars", "path", "newline", "nul", "non-ascii"],
)
async def test_bad_client_id_is_refused(server: Any, query: str, asgi_server: str) -> None:
    status = await upgrade_status(server, "/ws" + query)
    if status is None and asgi_server == "uvicorn" and len(query) > 8192:
        pass  # uvicorn's websockets-sansio logs a 414 for a request line over 8 KiB but never sends it
    else:
        assert status in (400, 403, 414)
    await still_serves(server)


async def upgrade_status(server: Any, target: str) -> int | None:
    """The HTTP status a websocket upgrade request gets, read off the wire; None when no status
    line comes within 3 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            (
                f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: {server.http_url}\r\n\r\n"
            ).encode()
        )
        try:
            status_line = await asyncio.wait_for(reader.readline(), 3)
        except asyncio.TimeoutError:
            return None
        return int(status_line.split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


async def test_answers_cannot_reach_another_clients_question(server: Any) -> None:
    async with WsClient(server.ws_url) as victim, WsClient(server.ws_url) as attacker:
        await victim.send({"dispatch-key": "start-conversation"})
        question = await victim.next_question()
        stolen = frozenset({str(question["p-key"])})
        await attacker.send({"dispatch-key": "domain-expert-says", "msg-text": "mine now", "promise-keys": stolen})
        assert (await attacker.recv())["error"] == "no-matching-question"
        await attacker.send_raw(
            '{:dispatch-key :domain-expert-says :msg-text "mine" :promise-keys #{:%s} :client-id "%s"}'
            % (question["p-key"], victim.client_id)
        )
        assert (await attacker.recv())["error"] == "no-matching-question"
        await victim.answer("the real answer")
        cleared = await victim.recv_until("clear-promise-keys")
        assert [str(k) for k in cleared["promise-keys"]] == [str(question["p-key"])]
        await victim.send({"dispatch-key": "close-channel"})
        await victim.closed()
    assert (await leaked_records(server))["questions"] == 0


async def test_sync_handler_runs(server: Any) -> None:
    async with WsClient(server.ws_url) as client:
        await client.send({"dispatch-key": "test-sync-echo", "text": "hello"})
        reply = await client.recv()
        assert reply == {**reply, "dispatch-key": "test-echo", "text": "hello"}


def test_catalogue_has_at_least_25_classes() -> None:
    # CASES plus invalid UTF-8, flood, 7 client-id classes, cross-client answer and client-id spoofing
    assert len(CASES) + 1 + 1 + 7 + 2 >= 25
    assert json.dumps([c.name for c in CASES])
