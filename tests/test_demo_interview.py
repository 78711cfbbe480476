"""The demo interviewer when its asker dies between an answer and the next question.

The answer is journaled with its resolution, so a new run (from the orphaned answer, or from the
client's resume) saves it and goes on with the next question: nothing answered is asked again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from channels.db import database_sync_to_async

from chat_ws import api
from chat_ws.store.base import new_p_key
from chat_ws.types import Question
from stbd_project.interview.models import Interview
from stbd_project.interview.script import QUESTIONS, RESUMED
from tests.comm import Comm

pytestmark = pytest.mark.django_db(transaction=True)

CONVERSATION = "process"


@database_sync_to_async
def saved(client_id: str, answered: int) -> None:
    Interview.objects.create(
        client_id=client_id,
        conversation=CONVERSATION,
        answers=[{"id": qid, "question": text, "answer": f"a{i}"} for i, (qid, text) in enumerate(QUESTIONS[:answered])],
    )


@database_sync_to_async
def answers_of(client_id: str) -> list[str]:
    row = Interview.objects.get(client_id=client_id, conversation=CONVERSATION)
    return [a["id"] for a in row.answers]


async def asked_by_a_dead_run(store: Any, client_id: str, index: int) -> str:
    """The question a run asked just before its process died; its p-key."""
    question_id, text = QUESTIONS[index]
    p_key = new_p_key(client_id)
    now = time.time()
    message = {"dispatch-key": "iviewr-says", "text": text, "p-key": p_key}
    question = Question(
        p_key, client_id, CONVERSATION, message, now, now + 600, server_id="a-dead-process",
        extra={"question-id": question_id}, step=question_id,
    )  # fmt: skip
    state, _ = await store.ask_question(question, max_pending=10)
    assert state == "open"
    return p_key


async def test_an_orphaned_answer_is_saved_and_the_next_question_asked(store: Any) -> None:
    client = await Comm().connect()
    await saved(client.client_id, 2)
    p_key = await asked_by_a_dead_run(store, client.client_id, 2)
    await client.answer("Painting.", {p_key})
    nxt = await client.recv_until("iviewr-says")
    assert nxt["text"] == QUESTIONS[3][1], "the answered question was asked again"
    assert await answers_of(client.client_id) == [qid for qid, _ in QUESTIONS[:3]]
    await client.disconnect()


async def test_resume_saves_a_journaled_answer_and_asks_the_next_question(store: Any) -> None:
    """The run died after the answer was resolved and confirmed, before it saved it: the resume
    finds the answer in the journal instead of asking the question again."""
    client = await Comm().connect()
    await saved(client.client_id, 2)
    p_key = await asked_by_a_dead_run(store, client.client_id, 2)
    api.answer_orphaned.disconnect(dispatch_uid="interview-orphans")  # as if the hand-over got lost
    try:
        await client.answer("Painting.", {p_key})
        cleared = await client.recv_until("clear-promise-keys")
        assert [str(k) for k in cleared["promise-keys"]] == [p_key]
    finally:
        from stbd_project.interview import interviewer

        api.answer_orphaned.connect(interviewer.continue_after_orphaned_answer, dispatch_uid="interview-orphans")
    await client.send({"dispatch-key": "resume-conversation"})
    said = await client.recv_until("iviewr-says")
    assert said["text"] == RESUMED
    nxt = await client.recv_until("iviewr-says")
    assert nxt["text"] == QUESTIONS[3][1], "the answered question was asked again"
    assert await answers_of(client.client_id) == [qid for qid, _ in QUESTIONS[:3]]
    await client.disconnect()


async def test_two_runs_of_one_interview_ask_each_question_once(store: Any) -> None:
    """A resume that starts a second run while the first still waits: the second takes the
    pending question over, and the client is asked every question once."""
    client = await Comm().connect()
    await client.send({"dispatch-key": "start-conversation"})
    first = await client.recv_until("iviewr-says")  # the intro
    assert "p-key" not in first
    question = await client.recv_until("iviewr-says")
    from stbd_project.interview import interviewer

    first_run = interviewer._running[(client.client_id, CONVERSATION)]
    second_run = asyncio.create_task(interviewer._run(client.client_id, CONVERSATION))  # as another process would
    await asyncio.wait_for(first_run, 5)  # superseded: it stops
    seen = {str(question["p-key"])}
    for i in range(len(QUESTIONS)):
        await client.answer(f"a{i}", {str(question["p-key"])})
        if i + 1 < len(QUESTIONS):
            question = await client.recv_until("iviewr-says")
            assert str(question["p-key"]) not in seen and question["text"] == QUESTIONS[i + 1][1]
            seen.add(str(question["p-key"]))
    await client.recv_until("load-table")
    await asyncio.wait_for(second_run, 5)
    assert await answers_of(client.client_id) == [qid for qid, _ in QUESTIONS]
    await client.disconnect()


async def test_a_start_that_arrives_late_does_not_wipe_a_run_resumed_since(store: Any) -> None:
    """The client sent start-conversation, its socket dropped, and it resumed on another process,
    whose run saved answers while the start still waited here (for the database): the late start
    must not reset the interview nor withdraw its question."""
    from django.utils import timezone

    from stbd_project.interview import interviewer

    client = await Comm().connect()
    requested = timezone.now()  # the start-conversation arrives...
    await saved(client.client_id, 2)  # ...then the resumed run elsewhere saves two answers...
    p_key = await asked_by_a_dead_run(store, client.client_id, 2)  # ...and asks the third
    await interviewer.restart(client.client_id, CONVERSATION, requested_at=requested)  # the start, late
    assert await answers_of(client.client_id) == [qid for qid, _ in QUESTIONS[:2]]
    assert [q.p_key for q in await api.pending(client.client_id, CONVERSATION)] == [p_key]
    await client.disconnect()


async def test_a_start_after_a_finished_interview_starts_it_again(store: Any) -> None:
    from django.utils import timezone

    from stbd_project.interview import interviewer

    client = await Comm().connect()
    await saved(client.client_id, 2)
    await interviewer.restart(client.client_id, CONVERSATION, requested_at=timezone.now())
    question = await client.recv_until("iviewr-says")
    while "p-key" not in question:
        question = await client.recv_until("iviewr-says")
    assert question["text"] == QUESTIONS[0][1]
    assert await answers_of(client.client_id) == []
    await client.disconnect()
