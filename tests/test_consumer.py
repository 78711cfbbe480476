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


# ------------------------------------------------------------------ sending on a socket that closed
# What each server raises when the application sends on a socket that is closing or closed:
# daphne (autobahn's WebSocketProtocol.sendMessage) and uvicorn (all three websocket protocols).
def _daphne_closed() -> BaseException:
    from autobahn.exception import Disconnected

    return Disconnected("Attempt to send on a closed protocol")


def _uvicorn_closed() -> BaseException:
    from uvicorn.protocols.utils import ClientDisconnected

    return ClientDisconnected()


CLOSED_SOCKET = pytest.mark.parametrize("closed", [_daphne_closed, _uvicorn_closed], ids=["daphne", "uvicorn"])


class ClosedSend:
    """A server's send for a socket that closed: raises what the server raises, counts the calls."""

    def __init__(self, error: Any, *, allow: tuple[str, ...] = ()) -> None:
        self.error = error
        self.allow = allow  # event types that still go through (the accept of a socket that dies later)
        self.calls: list[str] = []
        self.called = asyncio.Event()

    async def __call__(self, event: dict[str, Any]) -> None:
        self.calls.append(event["type"])
        if event["type"] in self.allow:
            return
        self.called.set()
        raise self.error()


def bare_consumer(send: Any) -> Any:
    from chat_ws.consumers import ChatConsumer

    consumer = ChatConsumer()
    consumer.client_id = "closing-socket"
    consumer.sent_questions = set()
    consumer.base_send = send
    return consumer


@CLOSED_SOCKET
async def test_push_on_a_socket_the_server_closed_marks_it_closed_and_raises_nothing(closed: Any, caplog: Any) -> None:
    from chat_ws.codec import Keyword

    send = ClosedSend(closed)
    consumer = bare_consumer(send)
    with caplog.at_level("DEBUG", logger="chat_ws.consumers"):
        await consumer.push({"dispatch-key": "iviewr-says", "text": "Q", "p-key": Keyword("promise-1")})
    assert consumer.is_closed
    assert "closing-socket" in caplog.text
    await consumer.push({"dispatch-key": "iviewr-says", "text": "again"})
    assert send.calls == ["websocket.send"]  # nothing more is sent on it


@CLOSED_SOCKET
async def test_closing_a_socket_the_server_closed_raises_nothing(closed: Any) -> None:
    from chat_ws.exceptions import WS_1009_MESSAGE_TOO_BIG, WS_4009_MESSAGE_TOO_BIG

    consumer = bare_consumer(ClosedSend(closed))
    await consumer._close_with(WS_1009_MESSAGE_TOO_BIG, WS_4009_MESSAGE_TOO_BIG, "message-too-big")
    assert consumer.is_closed
    consumer = bare_consumer(ClosedSend(closed))
    await consumer.shut(4002, "forgotten")
    assert consumer.is_closed


async def test_push_lets_an_unrelated_error_through() -> None:
    async def broken(event: dict[str, Any]) -> None:
        raise ValueError("a bug, not a closed socket")

    consumer = bare_consumer(broken)
    with pytest.raises(ValueError):
        await consumer.push({"dispatch-key": "iviewr-says", "text": "Q"})


@CLOSED_SOCKET
async def test_ask_to_a_socket_whose_send_fails_leaves_the_question_pending(closed: Any, backend: str) -> None:
    from chat_ws import api, delivery, promises
    from chat_ws.store import get_store

    comm = await Comm().connect()
    endpoint = delivery.local(comm.client_id)
    assert endpoint is not None
    send = ClosedSend(closed)
    endpoint.base_send = send  # type: ignore[attr-defined]
    asking = asyncio.create_task(api.ask(comm.client_id, {"dispatch-key": "iviewr-says", "text": "Still there?"}))
    await asyncio.wait_for(send.called.wait(), 5)
    pending = await get_store().pending(comm.client_id)
    assert [q.text() for q in pending] == ["Still there?"]
    assert not asking.done() or asking.exception() is None
    # The question is still answerable: the asker is alive and gets the answer.
    answer = {"dispatch-key": "domain-expert-says", "msg-text": "Yes.", "promise-keys": [pending[0].p_key]}
    assert await promises.answer(comm.client_id, answer) is not None
    assert (await asyncio.wait_for(asking, 5)).text == "Yes."
    await comm.disconnect()


async def _serve(client_id: str, send: Any) -> tuple[asyncio.Queue[dict[str, Any]], asyncio.Task[None]]:
    """Run the consumer for one socket against a fake server: events in through the queue."""
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {
        "type": "websocket", "path": "/ws", "query_string": f"client-id={client_id}".encode(),
        "headers": [], "subprotocols": [],
    }
    events.put_nowait({"type": "websocket.connect"})
    return events, asyncio.create_task(application()(scope, events.get, send))


@CLOSED_SOCKET
async def test_a_socket_that_closes_during_the_handshake_is_recorded_as_disconnected(closed: Any, backend: str) -> None:
    from chat_ws.store import get_store

    send = ClosedSend(closed)  # the accept fails: the client went away during the handshake
    events, serving = await _serve("gone-at-accept", send)
    await asyncio.wait_for(send.called.wait(), 5)
    events.put_nowait({"type": "websocket.disconnect", "code": 1006})
    await asyncio.wait_for(serving, 5)  # ends without an exception
    assert send.calls == ["websocket.accept"]
    connection = await get_store().connection("gone-at-accept")
    assert connection is None or not connection.is_open


@CLOSED_SOCKET
async def test_a_socket_that_closes_before_its_re_sent_questions_go_out_keeps_them(closed: Any, backend: str) -> None:
    from chat_ws import api
    from chat_ws.store import get_store

    comm = await Comm("resent-into-the-void").connect()
    asking = asyncio.create_task(api.ask(comm.client_id, {"dispatch-key": "iviewr-says", "text": "Held?"}))
    await comm.recv()
    await comm.disconnect()  # the question is held for the reconnect
    send = ClosedSend(closed, allow=("websocket.accept",))  # accepted, then closed before the flush
    events, serving = await _serve(comm.client_id, send)
    await asyncio.wait_for(send.called.wait(), 5)
    events.put_nowait({"type": "websocket.disconnect", "code": 1006})
    await asyncio.wait_for(serving, 5)
    assert send.calls == ["websocket.accept", "websocket.send"]
    assert [q.text() for q in await get_store().pending(comm.client_id)] == ["Held?"]
    assert not asking.done()
    asking.cancel()
