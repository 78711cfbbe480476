"""chat_ws.testing: what a site's own tests use to drive its handlers and reset chat_ws."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chat_ws import api, delivery, presence, promises
from chat_ws.testing import ChatCommunicator, reset

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def asking_handler() -> Any:
    @api.handler("test-ask-colour", replace=True)
    async def ask_colour(ctx: api.Context, message: api.Message) -> api.Message:
        answer = await api.ask(ctx.client_id, {"dispatch-key": "iviewr-says", "text": "Favourite colour?"})
        return {"dispatch-key": "iviewr-says", "text": f"{answer.text}, noted."}

    yield
    from chat_ws.dispatch import unregister

    unregister("test-ask-colour")


@pytest.mark.parametrize("codec", ["edn", "json"])
async def test_a_site_drives_its_asking_handler(backend: str, asking_handler: Any, codec: str) -> None:
    chat = ChatCommunicator(codec=codec)
    connected, subprotocol = await chat.connect()
    assert connected and subprotocol == ("chat_ws.json" if codec == "json" else None)
    await chat.send_message({"dispatch-key": "test-ask-colour"})
    question = await chat.receive_until("iviewr-says")
    assert question["text"] == "Favourite colour?" and chat.p_keys == {str(question["p-key"])}
    await chat.answer("Blue")
    assert (await chat.receive_message())["dispatch-key"] == "clear-promise-keys"
    assert chat.p_keys == set()
    assert (await chat.receive_until("iviewr-says"))["text"] == "Blue, noted."
    await chat.disconnect()


async def test_reset_forgets_the_process_state(settings: Any, backend: str) -> None:
    chat = ChatCommunicator()
    assert (await chat.connect())[0]
    asker = asyncio.create_task(api.ask(chat.client_id, {"dispatch-key": "iviewr-says", "text": "?"}))
    await chat.receive_message()
    await chat.disconnect()  # starts a reconnect-grace timer
    other = ChatCommunicator()
    assert (await other.connect())[0]
    assert delivery.local_count() == 1 and promises.waiting_here() == 1 and presence.pending_grace_timers() == 1
    reset()
    assert delivery.local_count() == 0 and promises.waiting_here() == 0 and presence.pending_grace_timers() == 0
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asker, 5)
    await other.disconnect()
