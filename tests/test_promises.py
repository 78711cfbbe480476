"""ask() end to end through a real ChatConsumer, with both stores and channel layers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chat_ws import api
from chat_ws.exceptions import (
    WS_4002_FORGOTTEN,
    AnswerTimeout,
    ClientGone,
    QuestionCancelled,
    TooManyPending,
)
from chat_ws.store import get_store
from tests.comm import Comm
from tests.conftest import chat_ws_settings

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 5.0  # seconds any awaited outcome may take


def ask(client_id: str, text: str, **kw: Any) -> asyncio.Task[api.Answer]:
    return asyncio.create_task(api.ask(client_id, {"dispatch-key": "iviewr-says", "text": text}, **kw))


async def test_ask_and_answer(store: Any) -> None:
    client = await Comm().connect()
    task = ask(client.client_id, "What do you make?", conversation="process")
    question = await client.recv()
    assert question["dispatch-key"] == "iviewr-says"
    assert question["text"] == "What do you make?"
    p_key = str(question["p-key"])
    assert p_key.startswith("promise-")
    await client.answer("Bicycles.", table={"rows": [[1, 2]]})
    answer = await asyncio.wait_for(task, WAIT)
    assert answer.text == "Bicycles."
    assert answer.table == {"rows": [[1, 2]]}
    assert answer.p_key == p_key and answer.conversation == "process"
    cleared = await client.recv()
    assert cleared["dispatch-key"] == "clear-promise-keys"
    assert [str(k) for k in cleared["promise-keys"]] == [p_key]
    assert "reason" not in cleared and "description" not in cleared  # an answer, not a withdrawal
    assert await store.pending() == []
    await client.disconnect()


async def test_most_recent_matching_question_is_resolved(store: Any) -> None:
    client = await Comm().connect()
    tasks = []
    for i in range(3):
        tasks.append(ask(client.client_id, f"q{i}", conversation=f"c{i}"))
        await client.recv()
    await client.answer("to the newest")
    newest = await asyncio.wait_for(tasks[2], WAIT)
    assert newest.text == "to the newest" and newest.conversation == "c2"
    assert not tasks[0].done() and not tasks[1].done()
    await client.recv_until("clear-promise-keys")
    await client.answer("to the middle")
    assert (await asyncio.wait_for(tasks[1], WAIT)).text == "to the middle"
    assert [q.conversation for q in await store.pending(client.client_id)] == ["c0"]
    tasks[0].cancel()
    await client.disconnect()


async def test_duplicate_answer_resolves_once(store: Any) -> None:
    client = await Comm().connect()
    task = ask(client.client_id, "once?")
    question = await client.recv()
    keys = {str(question["p-key"])}
    await client.answer("first", keys)
    await client.answer("second", keys)
    assert (await asyncio.wait_for(task, WAIT)).text == "first"
    replies = [await client.recv(), await client.recv()]
    assert [r["dispatch-key"] for r in replies] == ["clear-promise-keys", "error"]
    assert replies[1]["error"] == "no-matching-question"
    await client.disconnect()


async def test_answer_matching_nothing_changes_nothing(store: Any) -> None:
    client = await Comm().connect()
    task = ask(client.client_id, "still pending")
    await client.recv()
    await client.answer("wrong", {"promise-nope"})
    reply = await client.recv()
    assert reply["dispatch-key"] == "error" and reply["error"] == "no-matching-question"
    await client.answer("empty", set())
    assert (await client.recv())["error"] == "no-matching-question"
    assert len(await store.pending(client.client_id)) == 1
    assert not task.done()
    task.cancel()
    await client.disconnect()


async def test_other_clients_cannot_answer(store: Any) -> None:
    victim = await Comm().connect()
    attacker = await Comm().connect()
    task = ask(victim.client_id, "private")
    p_key = str((await victim.recv())["p-key"])
    await attacker.answer("hijack", {p_key}, **{"client-id": victim.client_id})
    assert (await attacker.recv())["error"] == "no-matching-question"
    assert not task.done()
    await victim.answer("mine")
    assert (await asyncio.wait_for(task, WAIT)).text == "mine"
    await victim.disconnect()
    await attacker.disconnect()


async def test_timeout_removes_question_and_tells_client(store: Any) -> None:
    client = await Comm().connect()
    task = ask(client.client_id, "quick!", timeout=0.2)
    p_key = str((await client.recv())["p-key"])
    with pytest.raises(AnswerTimeout):
        await asyncio.wait_for(task, WAIT)
    cleared = await client.recv()
    assert cleared["dispatch-key"] == "clear-promise-keys" and [str(k) for k in cleared["promise-keys"]] == [p_key]
    assert cleared["reason"] == "timeout" and "no answer within" in cleared["description"]
    assert await store.pending() == []
    await client.disconnect()


async def test_forget_rejects_questions_and_closes_socket(store: Any) -> None:
    client = await Comm().connect()
    task = ask(client.client_id, "will you stay?")
    await client.recv()
    assert await api.forget(client.client_id, "test") == 1
    with pytest.raises(ClientGone):
        await asyncio.wait_for(task, WAIT)
    assert await client.close_code() == WS_4002_FORGOTTEN
    assert await store.pending() == []
    assert await store.connection(client.client_id) is None


async def test_cancel(store: Any) -> None:
    client = await Comm().connect()
    task = ask(client.client_id, "cancel me")
    p_key = str((await client.recv())["p-key"])
    assert await api.cancel(p_key, "the operator closed this topic")
    with pytest.raises(QuestionCancelled):
        await asyncio.wait_for(task, WAIT)
    cleared = await client.recv()
    assert cleared["dispatch-key"] == "clear-promise-keys" and [str(k) for k in cleared["promise-keys"]] == [p_key]
    assert (cleared["reason"], cleared["description"]) == ("cancelled", "the operator closed this topic")
    assert not await api.cancel(p_key)
    await client.disconnect()


async def test_cancelled_asker_withdraws_its_question(store: Any) -> None:
    client = await Comm().connect()
    task = ask(client.client_id, "never mind")
    await client.recv()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cleared = await client.recv()
    assert cleared["dispatch-key"] == "clear-promise-keys" and cleared["reason"] == "cancelled"
    assert await store.pending() == []
    await client.disconnect()


async def test_unknown_client_is_gone_at_once(store: Any) -> None:
    with pytest.raises(ClientGone):
        await asyncio.wait_for(api.ask("nobody-here", {"dispatch-key": "iviewr-says", "text": "hi"}), WAIT)
    assert await store.pending() == []


async def test_question_survives_disconnect_and_is_resent_on_reconnect(store: Any) -> None:
    client = await Comm().connect()
    first = ask(client.client_id, "first", conversation="process")
    q1 = await client.recv()
    second = ask(client.client_id, "second", conversation="data")
    q2 = await client.recv()
    await client.disconnect()
    again = await Comm(client.client_id).connect()
    resent = [await again.recv(), await again.recv()]
    assert [(m["text"], str(m["p-key"])) for m in resent] == [
        ("first", str(q1["p-key"])),
        ("second", str(q2["p-key"])),
    ]
    await again.answer("answer to first", {str(q1["p-key"])})
    assert (await asyncio.wait_for(first, WAIT)).text == "answer to first"
    await again.answer("answer to second", {str(q2["p-key"])})
    assert (await asyncio.wait_for(second, WAIT)).text == "answer to second"
    await again.disconnect()


async def test_fail_fast_questions_fail_on_disconnect(store: Any) -> None:
    client = await Comm().connect()
    held = ask(client.client_id, "held")
    await client.recv()
    fast = ask(client.client_id, "fast", on_disconnect="fail")
    await client.recv()
    await client.disconnect()
    with pytest.raises(ClientGone):
        await asyncio.wait_for(fast, WAIT)
    assert not held.done()
    assert [q.text() for q in await store.pending(client.client_id)] == ["held"]
    held.cancel()


async def test_grace_expiry_fails_questions(settings: Any, backend: str) -> None:
    chat_ws_settings(settings, RECONNECT_GRACE=0.2)
    client = await Comm().connect()
    task = ask(client.client_id, "come back?")
    await client.recv()
    await client.disconnect()
    with pytest.raises(ClientGone):
        await asyncio.wait_for(task, WAIT)
    assert await get_store().pending() == []
    assert await get_store().connection(client.client_id) is None
    await get_store().close()


async def test_reconnect_within_grace_keeps_questions(settings: Any, backend: str) -> None:
    chat_ws_settings(settings, RECONNECT_GRACE=0.3)
    client = await Comm().connect()
    task = ask(client.client_id, "still there?")
    await client.recv()
    await client.disconnect()
    again = await Comm(client.client_id).connect()
    await again.recv()
    # Past the original grace period the question must still be pending: wait on a timer
    # longer than the grace, then check the asker is still waiting.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), 0.6)
    await again.answer("yes")
    assert (await asyncio.wait_for(task, WAIT)).text == "yes"
    await again.disconnect()
    await get_store().close()


async def test_too_many_pending(settings: Any, backend: str) -> None:
    chat_ws_settings(settings, MAX_PENDING_PER_CLIENT=2)
    client = await Comm().connect()
    tasks = [ask(client.client_id, f"q{i}") for i in range(2)]
    await client.recv()
    await client.recv()
    with pytest.raises(TooManyPending):
        await api.ask(client.client_id, {"dispatch-key": "iviewr-says", "text": "one more"})
    for task in tasks:
        task.cancel()
    await client.disconnect()
    await get_store().close()


async def test_sync_twin_in_a_thread(store: Any) -> None:
    client = await Comm().connect()
    result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def answer_when_asked() -> None:
        await client.recv()
        await client.answer("from a thread's asker")

    answering = asyncio.create_task(answer_when_asked())
    from asgiref.sync import sync_to_async

    def blocking() -> str | None:
        return api.ask_sync(client.client_id, {"dispatch-key": "iviewr-says", "text": "sync?"}).text

    text = await asyncio.wait_for(sync_to_async(blocking, thread_sensitive=False)(), WAIT)
    assert text == "from a thread's asker"
    await answering
    result.cancel()
    await client.disconnect()
