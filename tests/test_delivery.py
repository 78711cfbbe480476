"""Delivery to a socket in another process goes through the channel its presence record names."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from chat_ws import api, delivery
from chat_ws.exceptions import WS_4002_FORGOTTEN
from chat_ws.store import get_store
from tests.comm import Comm

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 5.0  # seconds any awaited outcome may take


def served_elsewhere(client_id: str) -> Any:
    """Take the socket out of this process's local table: delivery must reach it as it would
    reach a socket in another process (the consumer still listens on its layer channel)."""
    endpoint = delivery.detach(client_id)
    assert endpoint is not None
    return endpoint


async def test_a_socket_elsewhere_gets_messages_through_its_presence_channel(backend: str) -> None:
    comm = await Comm().connect()
    endpoint = served_elsewhere(comm.client_id)
    await api.send(comm.client_id, {"dispatch-key": "iviewr-says", "text": "from another process"})
    assert (await comm.recv())["text"] == "from another process"
    delivery.register(endpoint)
    await comm.disconnect()


async def test_forget_closes_a_socket_elsewhere_with_4002(backend: str) -> None:
    comm = await Comm().connect()
    served_elsewhere(comm.client_id)
    assert await api.forget(comm.client_id) == 0
    assert await comm.close_code() == WS_4002_FORGOTTEN
    assert await get_store().connection(comm.client_id) is None


async def test_nothing_goes_to_the_channel_of_a_closed_socket(backend: str) -> None:
    layer = delivery.layer()
    stale = await layer.new_channel()
    await get_store().open_connection("gone-away", "srv-other", stale, time.time())
    assert await get_store().close_connection("gone-away", stale, time.time())  # within its grace
    await delivery.deliver("gone-away", {"dispatch-key": "iviewr-says", "text": "into the void"})
    await layer.send(stale, {"type": "sentinel"})
    assert (await asyncio.wait_for(layer.receive(stale), WAIT))["type"] == "sentinel"  # the only one
    await api.forget("gone-away")
