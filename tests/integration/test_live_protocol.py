"""The original client's protocol over real TCP against daphne, with both channel layers."""

from __future__ import annotations

from typing import Any

import pytest

from chat_ws.exceptions import WS_4001_REPLACED, WS_4002_FORGOTTEN, WS_4009_MESSAGE_TOO_BIG
from tests.wsclient import WsClient

pytestmark = pytest.mark.integration


@pytest.fixture(params=["memory", "redis"])
def server(request: pytest.FixtureRequest, live_servers: Any) -> Any:
    return live_servers(redis=request.param == "redis")


async def test_ping_gets_ping_confirm(server: Any) -> None:
    async with WsClient(server.ws_url) as client:
        await client.send_raw(f'{{:dispatch-key :ping, :ping-id 1, :client-id "{client.client_id}"}}')
        reply = await client.recv()
        assert reply["dispatch-key"] == "ping-confirm"
        assert reply["ping-id"] == 1
        assert reply["timestamp"].year >= 2026


async def test_raw_frame_is_edn_the_original_client_reads(server: Any) -> None:
    async with WsClient(server.ws_url) as client:
        await client.send_raw('{:dispatch-key :ping, :ping-id 7}')
        text = await client.ws.recv()
        assert text.startswith("{:dispatch-key :ping-confirm, :ping-id 7, :timestamp #inst \"")
        assert text.endswith('-00:00"}')


async def test_bad_input_gets_errors_and_socket_keeps_serving(server: Any) -> None:
    async with WsClient(server.ws_url) as client:
        cases = [
            ("{:dispatch-key", "malformed-message"),
            ("[1 2 3]", "malformed-message"),
            ("{:msg-text \"no key\"}", "malformed-message"),
            ("{:dispatch-key :no-such-thing}", "unknown-dispatch-key"),
            (b"\x00\x01", "binary-frame"),
        ]
        for frame, error in cases:
            await client.send_raw(frame)
            reply = await client.recv()
            assert reply["dispatch-key"] == "error", frame
            assert reply["error"] == error, frame
        await client.send({"dispatch-key": "ping", "ping-id": 2})
        assert (await client.recv())["dispatch-key"] == "ping-confirm"


async def test_oversized_frame_closes_with_1009_or_4009_under_daphne(server: Any, asgi_server: str) -> None:
    # autobahn (daphne) lets applications send only 1000 and 3000-4999; other servers send 1009.
    async with WsClient(server.ws_url) as client:
        await client.send_raw("{:dispatch-key :ping :pad \"" + "x" * (70 * 1024) + "\"}")
        assert await client.closed() == (WS_4009_MESSAGE_TOO_BIG if asgi_server == "daphne" else 1009)


async def test_second_connection_replaces_the_first(server: Any) -> None:
    first = await WsClient(server.ws_url).connect()
    second = await WsClient(server.ws_url, first.client_id).connect()
    try:
        assert await first.closed() == WS_4001_REPLACED
        await second.send({"dispatch-key": "ping", "ping-id": 3})
        assert (await second.recv())["dispatch-key"] == "ping-confirm"
    finally:
        await first.close()
        await second.close()


async def test_close_channel_closes_the_socket(server: Any) -> None:
    async with WsClient(server.ws_url) as client:
        await client.send({"dispatch-key": "close-channel"})
        assert await client.closed() == WS_4002_FORGOTTEN


async def test_json_subprotocol(server: Any) -> None:
    async with WsClient(server.ws_url, json=True) as client:
        assert client.ws.subprotocol == "chat_ws.json"
        await client.send_raw('{"dispatch-key": "ping", "ping-id": 5}')
        text = await client.ws.recv()
        assert text.startswith('{"dispatch-key":"ping-confirm","ping-id":5,"timestamp":"')


async def test_interview_asks_answers_and_asks_next(server: Any) -> None:
    async with WsClient(server.ws_url) as client:
        await client.send({"dispatch-key": "start-conversation"})
        first = await client.next_question(timeout=1.0)
        assert first["dispatch-key"] == "iviewr-says"
        await client.answer("Bicycles.")
        cleared = await client.recv_until("clear-promise-keys")
        assert [str(k) for k in cleared["promise-keys"]] == [str(first["p-key"])]
        second = await client.next_question()
        assert second["p-key"] != first["p-key"]


async def test_missing_client_id_is_refused(server: Any) -> None:
    import websockets

    for query in ("", "?client-id=", "?client-id=" + "a" * 129, "?client-id=..%2F..%2Fetc", "?client-id=a%0Ab"):
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(server.ws_url + query, origin=server.http_url, open_timeout=5)
