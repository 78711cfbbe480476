"""Graceful shutdown (chat_ws.shutdown) with in-process sockets; tests/integration/test_shutdown.py
sends SIGTERM to real daphne and uvicorn processes."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from chat_ws import api, delivery, presence, shutdown
from chat_ws.consumers import ChatConsumer
from chat_ws.exceptions import WS_1012_SERVICE_RESTART
from chat_ws.runtime import runtime
from tests.comm import Comm

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 5.0  # seconds any awaited outcome may take


def ask(client_id: str, text: str) -> asyncio.Task[api.Answer]:
    return asyncio.create_task(api.ask(client_id, {"dispatch-key": "iviewr-says", "text": text}))


@pytest.fixture
def sigterm() -> Iterator[None]:
    """SIGTERM's handler is put back after the test."""
    original = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, original)


async def test_shutdown_closes_sockets_with_1012_and_their_questions_wait_for_the_reconnect(store: Any) -> None:
    client = await Comm().connect()
    asking = ask(client.client_id, "Still with me?")
    p_key = str((await client.recv())["p-key"])

    stopping = asyncio.create_task(shutdown.shutdown())
    assert await client.close_code() == WS_1012_SERVICE_RESTART
    assert runtime().stopping
    await client.disconnect(WS_1012_SERVICE_RESTART)  # the server's disconnect event
    assert await asyncio.wait_for(stopping, WAIT) == 1

    # An ordinary disconnect: the record waits out the reconnect grace, the question stays.
    connection = await store.connection(client.client_id)
    assert connection is not None and not connection.is_open
    assert presence.pending_grace_timers() == 1
    assert [q.p_key for q in await store.pending(client.client_id)] == [p_key]
    # The asker ends with the process (cancelled, or never woken): its question stays pending.
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asking
    assert [q.p_key for q in await store.pending(client.client_id)] == [p_key]

    # The client's reconnect (in the next process) gets it again with its p-key.
    runtime().stopping = False  # as a fresh process
    again = await Comm(client.client_id).connect()
    assert str((await again.recv())["p-key"]) == p_key
    await again.disconnect()


async def test_a_cancelled_asker_withdraws_its_question_but_not_while_the_process_stops(store: Any) -> None:
    client = await Comm().connect()
    withdrawn = ask(client.client_id, "Withdrawn?")
    await client.recv()
    withdrawn.cancel()
    assert (await client.recv())["reason"] == "cancelled"
    assert await store.pending(client.client_id) == []

    kept = ask(client.client_id, "Kept?")
    p_key = str((await client.recv())["p-key"])
    runtime().stopping = True
    kept.cancel()
    with pytest.raises(asyncio.CancelledError):
        await kept
    assert [q.p_key for q in await store.pending(client.client_id)] == [p_key]
    assert await client.nothing()  # no clear-promise-keys: the client keeps showing it
    await client.disconnect()


async def test_a_socket_opened_while_the_process_stops_is_refused(backend: str) -> None:
    runtime().stopping = True
    connected, _ = await Comm().try_connect()
    assert not connected
    assert delivery.local_count() == 0


async def test_a_socket_in_its_handshake_at_shutdown_is_accepted_then_closed_with_1012(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered, gate = asyncio.Event(), asyncio.Event()
    connected = presence.connected

    async def slow_connect(endpoint: Any) -> None:
        await connected(endpoint)
        registered.set()
        await gate.wait()

    monkeypatch.setattr(presence, "connected", slow_connect)
    listed = asyncio.Event()
    restart = ChatConsumer.restart

    async def listed_restart(self: ChatConsumer) -> None:
        listed.set()
        await restart(self)

    monkeypatch.setattr(ChatConsumer, "restart", listed_restart)
    client = Comm()
    connecting = asyncio.create_task(client.comm.connect(timeout=WAIT))
    await asyncio.wait_for(registered.wait(), WAIT)
    stopping = asyncio.create_task(shutdown.shutdown())
    await asyncio.wait_for(listed.wait(), WAIT)  # the shutdown listed the sockets, this one among them
    assert runtime().stopping
    gate.set()
    assert (await connecting)[0]  # accepted (a refusal would tell the browser nothing)...
    assert await client.close_code() == WS_1012_SERVICE_RESTART  # ...then closed with 1012
    await client.disconnect(WS_1012_SERVICE_RESTART)
    assert await asyncio.wait_for(stopping, WAIT) == 1


async def test_shutdown_is_bounded_when_a_close_is_never_confirmed(backend: str, caplog: Any) -> None:
    client = await Comm().connect()
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await shutdown.shutdown(timeout=0.3) == 1  # no disconnect event comes
    assert loop.time() - began < 0.3 + 1.0
    assert "1 socket(s) not confirmed closed within 0.3s" in caplog.text
    assert await client.close_code() == WS_1012_SERVICE_RESTART
    await client.disconnect(WS_1012_SERVICE_RESTART)


async def test_sigterm_closes_the_sockets_before_the_servers_own_handler_runs(backend: str, sigterm: None) -> None:
    calls: list[tuple[int, bool, int]] = []
    passed_on = asyncio.Event()

    def server_handler(signum: int, frame: Any) -> None:  # what daphne's reactor or uvicorn installs
        calls.append((signum, runtime().stopping, delivery.local_count()))
        passed_on.set()

    signal.signal(signal.SIGTERM, server_handler)
    assert shutdown.install()
    relay = signal.getsignal(signal.SIGTERM)
    assert relay is not server_handler
    assert shutdown.install() and signal.getsignal(signal.SIGTERM) is relay  # once per process
    client = await Comm().connect()

    relay(signal.SIGTERM, None)  # type: ignore[operator]  # as the signal calls it
    assert runtime().stopping
    assert await client.close_code() == WS_1012_SERVICE_RESTART
    assert not passed_on.is_set()  # the server stops only once the close is recorded
    await client.disconnect(WS_1012_SERVICE_RESTART)
    await asyncio.wait_for(passed_on.wait(), WAIT)
    assert calls == [(signal.SIGTERM, True, 0)]

    relay(signal.SIGTERM, None)  # type: ignore[operator]  # a second SIGTERM: on to the server at once
    assert len(calls) == 2


async def test_the_consumer_installs_the_step_in_front_of_the_servers_handler(backend: str, sigterm: None) -> None:
    def server_handler(signum: int, frame: Any) -> None:
        pass

    signal.signal(signal.SIGTERM, server_handler)
    client = await Comm().connect()
    relay = signal.getsignal(signal.SIGTERM)
    assert isinstance(relay, shutdown._Relay) and relay.previous is server_handler
    await client.disconnect()


def test_without_a_servers_handler_sigterm_is_left_alone(sigterm: None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert not shutdown.install()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
