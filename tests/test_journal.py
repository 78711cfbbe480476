"""Step questions: answers journaled with their resolution, replayed, taken over and handed over.

Every test runs on the in-memory store, one Redis and a Redis Cluster (the ``store`` fixture).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from chat_ws import api, sweep
from chat_ws.exceptions import QuestionSuperseded
from chat_ws.store import get_store
from chat_ws.store.base import new_p_key
from chat_ws.types import JournalEntry, Question
from tests.comm import Comm
from tests.conftest import chat_ws_settings

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 5.0  # seconds any awaited outcome may take
QUIET = 0.2  # seconds in which a frame that should not come would have come


def ask(client_id: str, text: str, **kw: Any) -> asyncio.Task[api.Answer]:
    return asyncio.create_task(api.ask(client_id, {"dispatch-key": "iviewr-says", "text": text}, **kw))


async def answered(client: Comm, text: str) -> str:
    """Answer the next question the client receives; its p-key."""
    question = await client.recv()
    assert question["dispatch-key"] == "iviewr-says", question
    p_key = str(question["p-key"])
    await client.answer(text, {p_key})
    await client.recv_until("clear-promise-keys")
    return p_key


async def step_s1_answered(settings: Any) -> tuple[Any, Comm]:
    """With ANSWER_CONSUME_TIMEOUT 10 s: a client whose step s1 of conversation iv is answered
    ("a1") and returned to its asker. The store of those settings, and the client."""
    chat_ws_settings(settings, ANSWER_CONSUME_TIMEOUT=10)
    store = get_store()
    client = await Comm().connect()
    first = ask(client.client_id, "q1", conversation="iv", step="s1")
    await answered(client, "a1")
    await asyncio.wait_for(first, WAIT)
    return store, client


async def test_a_step_answer_is_journaled_and_replayed_without_asking(store: Any) -> None:
    client = await Comm().connect()
    first = ask(client.client_id, "What do you make?", conversation="iv", step="products")
    p_key = await answered(client, "Bicycles.")
    assert (await asyncio.wait_for(first, WAIT)).text == "Bicycles."
    journal = await store.journal(client.client_id)
    entry = journal["iv\x1fproducts"]
    assert isinstance(entry, JournalEntry)
    assert entry.question.p_key == p_key and entry.answer["msg-text"] == "Bicycles."
    again = await asyncio.wait_for(
        api.ask(client.client_id, {"dispatch-key": "iviewr-says", "text": "What do you make?"}, conversation="iv", step="products"),
        WAIT,
    )
    assert again.text == "Bicycles." and again.p_key == p_key
    assert await client.comm.receive_nothing(QUIET), "a replayed step must send nothing"
    assert await store.pending() == []
    await client.disconnect()


async def test_the_same_step_in_another_conversation_is_asked(store: Any) -> None:
    client = await Comm().connect()
    first = ask(client.client_id, "q", conversation="a", step="s")
    await answered(client, "in a")
    await asyncio.wait_for(first, WAIT)
    second = ask(client.client_id, "q", conversation="b", step="s")
    await answered(client, "in b")
    assert (await asyncio.wait_for(second, WAIT)).text == "in b"
    await client.disconnect()


async def test_a_second_asker_of_a_pending_step_takes_it_over(store: Any) -> None:
    client = await Comm().connect()
    first = ask(client.client_id, "Which step limits you?", conversation="iv", step="bottleneck")
    question = await client.recv()
    second = ask(client.client_id, "Which step limits you?", conversation="iv", step="bottleneck")
    with pytest.raises(QuestionSuperseded):
        await asyncio.wait_for(first, WAIT)
    assert await client.comm.receive_nothing(QUIET), "a taken-over question is not sent again"
    [pending] = await store.pending(client.client_id)
    assert pending.p_key == str(question["p-key"])
    await client.answer("Painting.", {str(question["p-key"])})
    answer = await asyncio.wait_for(second, WAIT)
    assert answer.text == "Painting." and answer.p_key == str(question["p-key"])
    await client.disconnect()


async def test_an_asker_in_a_dead_process_is_taken_over(store: Any) -> None:
    """A run that died left its step pending; a new run's ask() waits on that same question."""
    client = await Comm().connect()
    now = time.time()
    p_key = new_p_key(client.client_id)
    message = {"dispatch-key": "iviewr-says", "text": "Orders?", "p-key": p_key}
    dead = Question(p_key, client.client_id, "iv", message, now, now + 60, server_id="a-dead-process", step="orders")
    state, _ = await store.ask_question(dead, max_pending=10)
    assert state == "open"
    run = ask(client.client_id, "Orders?", conversation="iv", step="orders")
    assert await client.comm.receive_nothing(QUIET)
    await client.answer("By email.", {p_key})
    assert (await asyncio.wait_for(run, WAIT)).text == "By email."
    await client.disconnect()


async def test_an_answer_whose_asker_died_stays_in_the_journal(store: Any) -> None:
    """The answer arrives after its asker's process died: answer_orphaned fires, and a new run
    of the conversation gets the answer from the journal without asking again."""
    client = await Comm().connect()
    orphaned: list[tuple[Question, api.Answer]] = []

    async def receiver(sender: Any, question: Question, answer: api.Answer, **kw: Any) -> None:
        orphaned.append((question, answer))

    api.answer_orphaned.connect(receiver, weak=False)
    try:
        now = time.time()
        p_key = new_p_key(client.client_id)
        message = {"dispatch-key": "iviewr-says", "text": "Changeover?", "p-key": p_key}
        gone = Question(p_key, client.client_id, "iv", message, now, now + 60, server_id="gone", step="changeover")
        await store.ask_question(gone, max_pending=10)
        await client.answer("Two hours.", {p_key})
        await client.recv_until("clear-promise-keys")
        assert [(q.step, a.text) for q, a in orphaned] == [("changeover", "Two hours.")]
        replay = await asyncio.wait_for(
            api.ask(client.client_id, {"dispatch-key": "iviewr-says", "text": "Changeover?"}, conversation="iv", step="changeover"),
            WAIT,
        )
        assert replay.text == "Two hours."
        assert await client.comm.receive_nothing(QUIET)
    finally:
        api.answer_orphaned.disconnect(receiver)
    await client.disconnect()


async def test_unconsumed_answers_are_handed_over_until_the_next_step_consumes_them(store: Any, settings: Any) -> None:
    chat_ws_settings(settings, ANSWER_CONSUME_TIMEOUT=10)
    store = get_store()  # the store of the changed settings
    client = await Comm().connect()
    handed: list[str] = []

    async def receiver(sender: Any, question: Question, answer: api.Answer, **kw: Any) -> None:
        handed.append(f"{question.step}={answer.text}")

    api.answer_orphaned.connect(receiver, weak=False)
    try:
        first = ask(client.client_id, "q1", conversation="iv", step="s1")
        await answered(client, "a1")
        await asyncio.wait_for(first, WAIT)
        now = time.time()
        report = await sweep.sweep(now=now)  # answered just now: not due
        assert report.handed_over == 0 and handed == []
        report = await sweep.sweep(now=now + 20)
        assert report.handed_over == 1 and handed == ["s1=a1"]
        report = await sweep.sweep(now=now + 25)  # handed at +20: due again only at +30
        assert report.handed_over == 0
        report = await sweep.sweep(now=now + 31)
        assert report.handed_over == 1 and handed == ["s1=a1", "s1=a1"]
        second = ask(client.client_id, "q2", conversation="iv", step="s2")  # the asker moved on
        await client.recv()
        report = await sweep.sweep(now=now + 100)
        assert report.handed_over == 0
        second.cancel()
    finally:
        api.answer_orphaned.disconnect(receiver)
    await client.disconnect()


async def test_a_step_asked_in_another_conversation_consumes_nothing(store: Any, settings: Any) -> None:
    store, client = await step_s1_answered(settings)
    other = ask(client.client_id, "elsewhere", conversation="other", step="s1")
    await client.recv()
    [entry] = await store.unconsumed_answers(time.time() + 20, time.time() + 20)
    assert entry.question.conversation == "iv"
    other.cancel()
    await client.disconnect()


async def test_end_conversation_consumes_and_forget_drops_the_journal(store: Any, settings: Any) -> None:
    store, client = await step_s1_answered(settings)
    await api.end_conversation(client.client_id, "iv")
    assert await store.unconsumed_answers(time.time() + 100, time.time() + 100) == []
    assert list(await store.journal(client.client_id)) == ["iv\x1fs1"]
    await api.end_conversation(client.client_id, "iv", forget=True)
    assert await store.journal(client.client_id) == {}
    again = ask(client.client_id, "q1", conversation="iv", step="s1")
    await answered(client, "a1 again")
    assert (await asyncio.wait_for(again, WAIT)).text == "a1 again"
    await client.disconnect()


async def test_forget_drops_the_journal_and_its_hand_over(store: Any, settings: Any) -> None:
    store, client = await step_s1_answered(settings)
    pending = ask(client.client_id, "q2", conversation="iv", step="s2")
    await client.recv()
    await api.forget(client.client_id)
    with pytest.raises(api.ClientGone):
        await asyncio.wait_for(pending, WAIT)
    assert await store.journal(client.client_id) == {}
    assert await store.unconsumed_answers(time.time() + 100, time.time() + 100) == []
    if hasattr(store, "bucket_key"):  # Redis: nothing of the journal is left in any key
        b = store.bucket(client.client_id)
        assert await store._call("HLEN", store.bucket_key(b, "qs")) == 0
        assert await store._call("ZCARD", store.bucket_key(b, "idx", "a")) == 0
        assert await store._call("EXISTS", store.bucket_key(b, "j", client.client_id)) == 0
        assert await store._call("EXISTS", store.bucket_key(b, "ja", client.client_id)) == 0


async def test_a_withdrawn_step_is_asked_afresh(store: Any) -> None:
    client = await Comm().connect()
    first = ask(client.client_id, "q1", conversation="iv", step="s1", timeout=0.3)
    withdrawn = await client.recv()
    with pytest.raises(api.AnswerTimeout):
        await asyncio.wait_for(first, WAIT)
    await client.recv_until("clear-promise-keys")
    second = ask(client.client_id, "q1", conversation="iv", step="s1")
    fresh = await client.recv()
    assert fresh["p-key"] != withdrawn["p-key"]
    await client.answer("late but fine", {str(fresh["p-key"])})
    assert (await asyncio.wait_for(second, WAIT)).text == "late but fine"
    await client.disconnect()


@pytest.mark.parametrize("bad", ["", "a\x1fb", 3])
async def test_step_and_conversation_names_are_checked(store: Any, bad: Any) -> None:
    with pytest.raises(ValueError):
        await api.ask("someone", {"dispatch-key": "iviewr-says", "text": "?"}, step=bad)
    with pytest.raises(ValueError):
        await api.ask("someone", {"dispatch-key": "iviewr-says", "text": "?"}, conversation=bad)


async def test_a_question_is_taken_only_from_the_asker_that_holds_it(store: Any) -> None:
    """take(..., asker=question) removes a question only while that asker holds it: once another
    asker took it over, the former one's withdrawal (a timeout, a cancellation) changes nothing."""
    client = await Comm().connect()
    now = time.time()
    p_key = new_p_key(client.client_id)
    message = {"dispatch-key": "iviewr-says", "text": "Orders?", "p-key": p_key}
    first = Question(p_key, client.client_id, "iv", message, now, now + 60, server_id="proc-a", step="orders", asker=1)
    assert (await store.ask_question(first, max_pending=10))[0] == "open"
    second = Question(p_key, client.client_id, "iv", message, now, now + 60, server_id="proc-a", step="orders", asker=2)
    assert await store.take_over(second)
    assert await store.take(p_key, client.client_id, asker=first) is None
    [pending] = await store.pending(client.client_id)
    assert (pending.server_id, pending.asker) == ("proc-a", 2)
    taken = await store.take(p_key, client.client_id, asker=second)
    assert taken is not None and taken.asker == 2
    assert await store.pending(client.client_id) == []
    await client.disconnect()


async def test_a_late_withdrawal_by_a_superseded_asker_leaves_the_question(store: Any) -> None:
    """Two askers of one step in one process: the first, superseded, is cancelled only after the
    second took its question over; the question stays for the second."""
    from chat_ws import promises

    client = await Comm().connect()
    first = ask(client.client_id, "Which step limits you?", conversation="iv", step="bottleneck")
    question = await client.recv()
    [held] = await store.pending(client.client_id)  # the first asker's record
    second = ask(client.client_id, "Which step limits you?", conversation="iv", step="bottleneck")
    with pytest.raises(QuestionSuperseded):
        await asyncio.wait_for(first, WAIT)
    await promises._abandon(held)  # the first asker's cancellation, arriving late
    assert await client.comm.receive_nothing(QUIET), "the client was told the question was withdrawn"
    await client.answer("Painting.", {str(question["p-key"])})
    assert (await asyncio.wait_for(second, WAIT)).text == "Painting."
    await client.disconnect()
