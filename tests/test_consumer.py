"""ChatConsumer driven in-process with channels' WebsocketCommunicator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from chat_ws.exceptions import WS_4001_REPLACED
from tests.comm import Comm, application

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("query", ["", "?client-id=", "?client-id=" + "x" * 129, "?client-id=a/b", "?client-id=a%20b"])
async def test_invalid_client_id_is_refused(query: str, backend: str) -> None:
    comm = WebsocketCommunicator(application(), "/ws" + query)
    connected, _ = await comm.connect(timeout=5)
    assert not connected
    # the consumer ends by itself: uvicorn sends no websocket.disconnect after a refused handshake
    finished, _ = await asyncio.wait({comm.future}, timeout=5)
    assert finished, "the consumer still waits after refusing the handshake"


async def test_128_character_client_id_is_accepted(backend: str) -> None:
    comm = await Comm("a" * 128).connect()
    await comm.send({"dispatch-key": "ping"})
    assert (await comm.recv())["dispatch-key"] == "ping-confirm"
    await comm.disconnect()


async def test_oversized_frame_closes_with_1009(backend: str) -> None:
    comm = await Comm().connect()
    await comm.send_raw('{:dispatch-key :ping :pad "' + "x" * 70000 + '"}')
    assert await comm.close_code() == 1009


async def test_json_subprotocol_is_negotiated(backend: str) -> None:
    comm = Comm(json=True)
    connected, subprotocol = await comm.comm.connect(timeout=5)
    assert connected and subprotocol == "chat_ws.json"
    await comm.send_raw('{"dispatch-key": "ping", "ping-id": 4}')
    event = await comm.comm.receive_output(5)
    assert event["text"].startswith('{"dispatch-key":"ping-confirm","ping-id":4,"timestamp":"')
    await comm.disconnect()


async def test_binary_frame_gets_an_error_and_the_socket_serves(backend: str) -> None:
    comm = await Comm().connect()
    await comm.send_raw(data=b"\x00\x01")
    assert (await comm.recv())["error"] == "binary-frame"
    await comm.send({"dispatch-key": "ping"})
    assert (await comm.recv())["dispatch-key"] == "ping-confirm"
    await comm.disconnect()


async def test_second_connection_replaces_the_first(backend: str) -> None:
    first = await Comm("same-id").connect()
    second = await Comm("same-id").connect()
    assert await first.close_code() == WS_4001_REPLACED
    await second.send({"dispatch-key": "ping"})
    assert (await second.recv())["dispatch-key"] == "ping-confirm"
    await second.disconnect()


async def test_client_id_in_message_is_replaced_by_the_connections(backend: str) -> None:
    from chat_ws.dispatch import handler, unregister

    seen: list[Any] = []

    @handler("test-who-am-i")
    async def who(ctx: Any, message: Any) -> None:
        seen.append((ctx.client_id, message["client-id"]))

    try:
        comm = await Comm("real-id").connect()
        await comm.send({"dispatch-key": "test-who-am-i", "client-id": "spoofed"})
        await comm.send({"dispatch-key": "ping"})
        await comm.recv_until("ping-confirm")
        assert seen == [("real-id", "real-id")]
        await comm.disconnect()
    finally:
        unregister("test-who-am-i")


async def test_session_rows_open_and_close(backend: str) -> None:
    from chat_ws.models import ClientSession

    from chat_ws import sessions

    comm = await Comm("history-1").connect()
    await sessions.flush()
    row = await ClientSession.objects.aget(client_id="history-1")
    assert row.is_open and row.server_id
    await comm.send({"dispatch-key": "close-channel"})
    await comm.close_code()
    await comm.disconnect()
    await sessions.flush()
    row = await ClientSession.objects.aget(client_id="history-1")
    assert not row.is_open and row.close_reason == "close-channel"


async def test_site_keyword_fields_reach_the_edn_wire(settings: Any, backend: str) -> None:
    from chat_ws import api
    from tests.conftest import chat_ws_settings

    chat_ws_settings(settings, EDN_KEYWORD_FIELDS=["conversation-id"])
    comm = await Comm().connect()
    await api.send(comm.client_id, {"dispatch-key": "iviewr-says", "conversation-id": "process", "text": "process"})
    event = await comm.comm.receive_output(5)
    assert ":conversation-id :process" in event["text"] and ':text "process"' in event["text"]
    await comm.disconnect()


async def test_the_socket_listens_on_the_configured_channel_layer(settings: Any) -> None:
    from channels.layers import get_channel_layer

    from chat_ws import delivery
    from tests.conftest import chat_ws_settings

    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
        "chat": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    }
    chat_ws_settings(settings, CHANNEL_LAYER="chat")
    comm = await Comm("layer-alias").connect()
    layer = get_channel_layer("chat")
    assert layer is not None
    message = {"dispatch-key": "iviewr-says", "text": "through the chat layer"}
    channel_name = delivery.local("layer-alias").channel_name  # type: ignore[union-attr]
    await layer.send(channel_name, {"type": delivery.DELIVER_EVENT, "message": message})
    assert (await comm.recv())["text"] == "through the chat layer"
    await comm.disconnect()


async def test_a_bad_layer_event_is_logged_and_the_socket_serves_on(backend: str, caplog: Any) -> None:
    from chat_ws import delivery

    comm = await Comm("layer-bad").connect()
    channel_name = delivery.local("layer-bad").channel_name  # type: ignore[union-attr]
    await delivery.layer().send(channel_name, {"type": "no.such.event"})
    await delivery.layer().send(channel_name, {"type": delivery.DELIVER_EVENT})  # no message
    await delivery.layer().send(
        channel_name, {"type": delivery.DELIVER_EVENT, "message": {"dispatch-key": "iviewr-says", "text": "still here"}}
    )
    assert (await comm.recv())["text"] == "still here"
    assert "unknown type 'no.such.event'" in caplog.text
    assert "failed to handle a 'chat.deliver' event" in caplog.text
    await comm.disconnect()
