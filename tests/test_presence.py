"""Presence: grace expiry goes through the same atomic evict-then-forget as the sweep."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from chat_ws import api
from chat_ws.exceptions import ClientGone
from chat_ws.store import get_store
from tests.comm import Comm
from tests.conftest import chat_ws_settings

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 5.0  # seconds any awaited outcome may take


async def test_grace_expiry_spares_a_client_that_reconnects_elsewhere_meanwhile(
    settings: Any, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client comes back in another process just after the grace timer looked at its record.

    A read-then-forget timer would forget the new connection; the atomic eviction must not.
    """
    chat_ws_settings(settings, RECONNECT_GRACE=0.1)
    store = get_store()
    client = await Comm().connect()
    asker = asyncio.create_task(api.ask(client.client_id, {"dispatch-key": "iviewr-says", "text": "still there?"}))
    await client.recv()
    reconnected = asyncio.Event()
    forgot = asyncio.Event()

    def reconnect_after(name: str) -> None:
        original = getattr(store, name)

        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = await original(*args, **kwargs)
            if args and args[0] == client.client_id and not reconnected.is_set():
                reconnected.set()  # another process registers the returning socket right now
                await store.open_connection(client.client_id, "srv-other", "chan-other", time.time())
            return result

        monkeypatch.setattr(store, name, wrapped)

    for name in ("connection", "evict"):  # whichever the timer reads the record with
        reconnect_after(name)
    original_forget = store.forget_client

    async def forget_client(*args: Any, **kwargs: Any) -> Any:
        try:
            return await original_forget(*args, **kwargs)
        finally:
            forgot.set()

    monkeypatch.setattr(store, "forget_client", forget_client)
    await client.disconnect()
    await asyncio.wait_for(reconnected.wait(), WAIT)
    await asyncio.wait_for(forgot.wait(), WAIT)
    record = await store.connection(client.client_id)
    assert record is not None and record.channel_name == "chan-other" and record.is_open
    assert [q.text() for q in await store.pending(client.client_id)] == ["still there?"]
    assert not asker.done()
    asker.cancel()


async def test_grace_expiry_forgets_a_client_that_stayed_away(settings: Any, backend: str) -> None:
    chat_ws_settings(settings, RECONNECT_GRACE=0.1)
    client = await Comm().connect()
    asker = asyncio.create_task(api.ask(client.client_id, {"dispatch-key": "iviewr-says", "text": "hello?"}))
    await client.recv()
    await client.disconnect()
    with pytest.raises(ClientGone):
        await asyncio.wait_for(asker, WAIT)
    assert await get_store().connection(client.client_id) is None
    assert await get_store().pending(client.client_id) == []
