"""The interviewer: asks the scripted questions one by one through chat_ws.api.ask().

An interview runs as its own task, independent of any socket. Its progress is saved after
each answer, so that a new task (after the old one died with its process, or stopped because
its client was forgotten) continues it without asking an answered question again, and says so.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from typing import Any

from channels.db import database_sync_to_async

from chat_ws import api
from stbd_project.interview.models import Interview
from stbd_project.interview.script import INTRO, OUTRO, QUESTIONS, RESTARTED, RESUMED, summary_table

logger = logging.getLogger(__name__)

QUESTION_TIMEOUT = 3600  # seconds a person may take to answer one question
STOP_WAIT = 2.0  # seconds resume waits for a task that is stopping (its client was just forgotten)

_running: dict[tuple[str, str], asyncio.Task[None]] = {}


@database_sync_to_async
def _progress(client_id: str, conversation: str, *, reset: bool) -> tuple[Interview, bool]:
    """The interview's row, and whether it continues an unfinished interview."""
    row, created = Interview.objects.get_or_create(client_id=client_id, conversation=conversation)
    if reset or row.finished:
        row.answers, row.finished = [], False
        row.save()
        return row, False
    return row, not created


@database_sync_to_async
def _save(row: Interview) -> None:
    row.save()


def running(client_id: str, conversation: str) -> bool:
    """True when an interview task for this conversation runs in this process."""
    task = _running.get((client_id, conversation))
    return task is not None and not task.done()


def start(client_id: str, conversation: str, *, reset: bool, announce: bool = False) -> asyncio.Task[None]:
    """Start an interview task (continuing saved progress unless reset).

    With ``announce``, an interview that continues tells the person it starts again.
    """
    old = _running.get((client_id, conversation))
    if old is not None and not old.done():
        old.cancel()
    task = asyncio.create_task(_interview(client_id, conversation, reset=reset, announce=announce))
    _running[(client_id, conversation)] = task
    task.add_done_callback(lambda t: _forget_task(client_id, conversation, t))
    return task


def _forget_task(client_id: str, conversation: str, task: asyncio.Task[None]) -> None:
    if _running.get((client_id, conversation)) is task:
        del _running[(client_id, conversation)]


async def _interview(client_id: str, conversation: str, *, reset: bool, announce: bool = False) -> None:
    row, continued = await _progress(client_id, conversation, reset=reset)
    if announce and continued:
        await api.send(client_id, {"dispatch-key": "iviewr-says", "text": RESUMED if row.answers else RESTARTED})
    elif not row.answers:
        await api.send(client_id, {"dispatch-key": "iviewr-says", "text": INTRO})
    try:
        for question_id, text in QUESTIONS[len(row.answers) :]:
            answer = await api.ask(
                client_id,
                {"dispatch-key": "iviewr-says", "text": text},
                conversation=conversation,
                timeout=QUESTION_TIMEOUT,
                meta={"question-id": question_id},
            )
            row.answers = [*row.answers, {"id": question_id, "question": text, "answer": answer.text or ""}]
            await _save(row)
    except api.QuestionError as exc:
        logger.info("interview %s/%s stopped: %s", client_id, conversation, type(exc).__name__)
        return
    row.finished = True
    await _save(row)
    await api.send(client_id, {"dispatch-key": "iviewr-says", "text": OUTRO})
    await api.send(client_id, {"dispatch-key": "load-table", "table": summary_table(row.answers)})
    logger.info("interview %s/%s finished", client_id, conversation)


@database_sync_to_async
def _record_orphaned(client_id: str, conversation: str, question_id: str, text: str, answer: str) -> bool:
    row = Interview.objects.filter(client_id=client_id, conversation=conversation).first()
    if row is None or row.finished or len(row.answers) >= len(QUESTIONS):
        return False
    if QUESTIONS[len(row.answers)][0] != question_id:
        return False  # not the question the interview waits for: never record an answer twice
    row.answers = [*row.answers, {"id": question_id, "question": text, "answer": answer}]
    row.save()
    return True


async def continue_after_orphaned_answer(sender: Any, question: Any, answer: Any, **kwargs: Any) -> None:
    """An answer arrived after its asking task died (with its process): record it and go on."""
    question_id = question.extra.get("question-id")
    if not question_id or running(question.client_id, question.conversation):
        return
    await _record_orphaned(
        question.client_id, question.conversation, question_id, question.text(), answer.text or ""
    )
    logger.info("interview %s/%s continues after its asker died", question.client_id, question.conversation)
    start(question.client_id, question.conversation, reset=False)


async def resume(client_id: str, conversation: str) -> None:
    """Continue an interview after a reconnect: re-send, re-ask, or start again when finished.

    An interview whose task stopped (its process died, or its client was forgotten and its
    question failed) starts again where it was, and says so.
    """
    pending = await api.pending(client_id, conversation)
    if pending:
        for question in pending:
            await api.send(client_id, question.message)
        return
    task = _running.get((client_id, conversation))
    if task is not None and not task.done():
        # Between two questions, or stopping: a forgotten client's reconnect can arrive before
        # the task has seen its question fail.
        await asyncio.wait({task}, timeout=STOP_WAIT)
        if not task.done():
            return
    start(client_id, conversation, reset=False, announce=True)


async def restart(client_id: str, conversation: str) -> None:
    """Start the interview from the first question, cancelling an older run's questions."""
    for question in await api.pending(client_id, conversation):
        await api.cancel(question.p_key, "interview restarted")
    start(client_id, conversation, reset=True)


async def loadtest(client_id: str, questions: int) -> dict[str, Any]:
    """Ask `questions` questions back to back through the full ask() path; report latencies."""
    latencies: list[float] = []
    for i in range(questions):
        began = time.perf_counter()
        try:
            await api.ask(
                client_id,
                {"dispatch-key": "iviewr-says", "text": f"Load-test question {i + 1}"},
                conversation="loadtest",
                timeout=60,
                on_disconnect="fail",
            )
        except api.QuestionError as exc:
            logger.info("load test of %s stopped after %d answers: %s", client_id, i, type(exc).__name__)
            break
        latencies.append((time.perf_counter() - began) * 1000)
    ordered = sorted(latencies)
    return {
        "dispatch-key": "loadtest-done",
        "asked": questions,
        "answered": len(latencies),
        "p50-ms": round(statistics.median(ordered), 3) if ordered else 0.0,
        "p99-ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3) if ordered else 0.0,
    }
