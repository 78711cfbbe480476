"""The interviewer: asks the scripted questions one by one through chat_ws.api.ask(step=...).

Each question is a step of the conversation, named by its question id, so chat_ws journals its
answer in the same step that resolves it. A run of the interview may therefore start again at
any time, in any process (after its process died, on the client's reconnect, or when chat_ws
hands over an answer nobody consumed): it skips the answers the Interview row already holds,
gets journaled answers back at once without asking, takes over a question still pending, and
asks only what is left. The row is the page's record, written idempotently by question id and in
order, so two runs that overlap for a moment record each answer once; the later run's ask of a
pending step supersedes the earlier run, which stops.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from chat_ws import api
from stbd_project.interview.models import Interview
from stbd_project.interview.script import INTRO, OUTRO, QUESTIONS, RESTARTED, RESUMED, summary_table

logger = logging.getLogger(__name__)

QUESTION_TIMEOUT = 3600  # seconds a person may take to answer one question
STOP_WAIT = 2.0  # seconds resume waits for a run that is stopping (its client was just forgotten)
STORE_RETRIES = 8  # times a run starts again after the store was unreachable (Redis restarting)
RETRY_FIRST, RETRY_CAP = 0.1, 2.0  # seconds before the first such start, doubling up to the cap

_running: dict[tuple[str, str], asyncio.Task[None]] = {}


@database_sync_to_async
def _moved_on_since(client_id: str, conversation: str, requested_at: datetime) -> bool:
    """True when the interview's row was written after ``requested_at``: a run resumed elsewhere
    since then (the request is stale)."""
    return Interview.objects.filter(client_id=client_id, conversation=conversation, updated_at__gt=requested_at).exists()


@database_sync_to_async
def _reset(client_id: str, conversation: str, requested_at: datetime) -> bool:
    """Empty the interview's row unless it was written after ``requested_at``; True when emptied."""
    with transaction.atomic():
        row, created = Interview.objects.select_for_update().get_or_create(client_id=client_id, conversation=conversation)
        if created:
            return True
        if row.updated_at > requested_at:
            return False
        row.answers, row.finished = [], False
        row.save(update_fields=["answers", "finished", "updated_at"])
        return True


@database_sync_to_async
def _create(client_id: str, conversation: str) -> None:
    Interview.objects.get_or_create(client_id=client_id, conversation=conversation)


@database_sync_to_async
def _row(client_id: str, conversation: str) -> Interview | None:
    return Interview.objects.filter(client_id=client_id, conversation=conversation).first()


@database_sync_to_async
def _record(client_id: str, conversation: str, question_id: str, text: str, answer: str) -> bool:
    """Save one answer unless the row has it already; only the next question's answer is taken,
    so answers are saved once each and in order. True when this call saved it."""
    with transaction.atomic():
        row, _ = Interview.objects.select_for_update().get_or_create(client_id=client_id, conversation=conversation)
        if any(saved["id"] == question_id for saved in row.answers):
            return False
        if len(row.answers) >= len(QUESTIONS) or QUESTIONS[len(row.answers)][0] != question_id:
            logger.warning("interview %s/%s: answer to %s out of order; not saved", client_id, conversation, question_id)
            return False
        row.answers = [*row.answers, {"id": question_id, "question": text, "answer": answer}]
        row.save(update_fields=["answers", "updated_at"])
        return True


@database_sync_to_async
def _finish(client_id: str, conversation: str) -> list[dict[str, str]]:
    with transaction.atomic():
        row = Interview.objects.select_for_update().get(client_id=client_id, conversation=conversation)
        if not row.finished:
            row.finished = True
            row.save(update_fields=["finished", "updated_at"])
        return list(row.answers)


def running(client_id: str, conversation: str) -> bool:
    """True when a run of this interview goes on in this process."""
    task = _running.get((client_id, conversation))
    return task is not None and not task.done()


def start(client_id: str, conversation: str) -> asyncio.Task[None]:
    """Start a run of the interview in this process, unless one runs here already."""
    old = _running.get((client_id, conversation))
    if old is not None and not old.done():
        return old
    task = asyncio.create_task(_run(client_id, conversation))
    _running[(client_id, conversation)] = task
    task.add_done_callback(lambda t: _forget_task(client_id, conversation, t))
    return task


def _forget_task(client_id: str, conversation: str, task: asyncio.Task[None]) -> None:
    if _running.get((client_id, conversation)) is task:
        del _running[(client_id, conversation)]


async def _run(client_id: str, conversation: str) -> None:
    """One run, started again while the store is unreachable (a run may always start again)."""
    for attempt in range(STORE_RETRIES + 1):
        try:
            await _interview(client_id, conversation)
            return
        except api.QuestionSuperseded:
            logger.info("interview %s/%s goes on in another run", client_id, conversation)
            return
        except (api.StoreUnavailable, api.StoreLost) as exc:
            if attempt == STORE_RETRIES:
                logger.warning("interview %s/%s stopped: %s", client_id, conversation, exc)
                return
            delay = min(RETRY_FIRST * 2**attempt, RETRY_CAP)
            logger.info("interview %s/%s: %s; starting again in %.1fs", client_id, conversation, exc, delay)
            await asyncio.sleep(delay)
        except api.QuestionError as exc:
            logger.info("interview %s/%s stopped: %s", client_id, conversation, type(exc).__name__)
            return


async def _interview(client_id: str, conversation: str) -> None:
    row = await _row(client_id, conversation)
    saved = {answer["id"] for answer in row.answers} if row is not None else set()
    for question_id, text in QUESTIONS:
        if question_id in saved:
            continue
        answer = await api.ask(
            client_id,
            {"dispatch-key": "iviewr-says", "text": text},
            conversation=conversation,
            step=question_id,
            timeout=QUESTION_TIMEOUT,
            meta={"question-id": question_id},
        )
        await _record(client_id, conversation, question_id, text, answer.text or "")
    answers = await _finish(client_id, conversation)
    await _send_summary(client_id, answers)
    await api.end_conversation(client_id, conversation)  # after the summary: a run that dies before
    # this point leaves its last answer unconsumed, so the interview is handed over and said again
    logger.info("interview %s/%s finished", client_id, conversation)


async def _send_summary(client_id: str, answers: list[dict[str, str]]) -> None:
    await api.send(client_id, {"dispatch-key": "iviewr-says", "text": OUTRO})
    await api.send(client_id, {"dispatch-key": "load-table", "table": summary_table(answers)})


async def _connected(client_id: str) -> bool:
    return any(c.client_id == client_id and c.is_open for c in await api.connections(client_id))


async def continue_after_orphaned_answer(sender: Any, question: Any, answer: Any, **kwargs: Any) -> None:
    """An answer whose asking run is gone (its process died): run the interview on from it here,
    the process that serves the client's socket. A client that has no socket now resumes the
    interview when it comes back."""
    if not question.extra.get("question-id") or running(question.client_id, question.conversation):
        return
    if not await _connected(question.client_id):
        return
    logger.info("interview %s/%s continues after its asker died", question.client_id, question.conversation)
    start(question.client_id, question.conversation)


async def resume(client_id: str, conversation: str) -> None:
    """Continue an interview after a reconnect, or say it again when it is finished.

    A run that still waits here on a pending question (re-sent on connect) goes on; otherwise a
    new run starts here, saying why when it will ask again, and takes over whatever is pending.
    """
    row = await _row(client_id, conversation)
    if row is not None and row.finished:
        await _send_summary(client_id, row.answers)
        return
    task = _running.get((client_id, conversation))
    if task is not None and not task.done():
        if await api.pending(client_id, conversation):
            return
        # Between two questions, or stopping: a forgotten client's reconnect can arrive before
        # the run has seen its question fail.
        await asyncio.wait({task}, timeout=STOP_WAIT)
        if not task.done():
            return
    if not await api.pending(client_id, conversation):
        if row is None:
            await _create(client_id, conversation)  # never _reset: another run may have made it by now
            await api.send(client_id, {"dispatch-key": "iviewr-says", "text": INTRO})
        else:
            await api.send(client_id, {"dispatch-key": "iviewr-says", "text": RESUMED if row.answers else RESTARTED})
    start(client_id, conversation)


async def restart(client_id: str, conversation: str, requested_at: datetime | None = None) -> None:
    """Start the interview from the first question: an older run's questions are cancelled and
    its journal dropped.

    ``requested_at`` is when the client asked for it (the start-conversation's arrival). A request
    that waited here while a run resumed elsewhere wrote the row (the client's socket dropped after
    it sent the start, and it resumed on another process) is stale and does nothing: the client's
    latest word is its resume. The processes' clocks are compared, so keep them in sync.
    """
    requested_at = timezone.now() if requested_at is None else requested_at
    if await _moved_on_since(client_id, conversation, requested_at):
        logger.info("interview %s/%s: a start that arrived before the run resumed since; ignored", client_id, conversation)
        return
    old = _running.get((client_id, conversation))
    if old is not None and not old.done():
        old.cancel()
        await asyncio.wait({old}, timeout=STOP_WAIT)
    for question in await api.pending(client_id, conversation):
        await api.cancel(question.p_key, "interview restarted")
    await api.end_conversation(client_id, conversation, forget=True)
    if await _reset(client_id, conversation, requested_at):
        await api.send(client_id, {"dispatch-key": "iviewr-says", "text": INTRO})
    else:  # a run elsewhere wrote the row meanwhile: go on from it (its question was withdrawn)
        logger.info("interview %s/%s: a run wrote the row while it restarted; going on from it", client_id, conversation)
    start(client_id, conversation)


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
