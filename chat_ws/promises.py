"""Questions that wait for answers: ask, answer, cancel and reject over the store.

The asker awaits a future registered in this process. Whoever settles a question (an answer,
a cancel, a forget) removes it from the store atomically first, so exactly one settlement
exists; it then wakes the asker directly when the asker runs here, or publishes a notice to the
asker's process through the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from chat_ws import delivery, metrics, protocol, signals
from chat_ws.codec import JSON, Keyword
from chat_ws.conf import get_settings
from chat_ws.runtime import runtime
from chat_ws.exceptions import (
    AnswerTimeout,
    ClientGone,
    InvalidMessage,
    QuestionCancelled,
    QuestionError,
    QuestionSuperseded,
    StoreLost,
    StoreUnavailable,
)
from chat_ws.store import get_store
from chat_ws.store.base import BaseStore, entry_from_json, entry_to_json, new_p_key
from chat_ws.types import JOURNAL_SEPARATOR, Answer, JournalEntry, Message, OnDisconnect, Outcome, Question

logger = logging.getLogger(__name__)

ANSWERED: Outcome = "answered"
GONE: Outcome = "gone"
CANCELLED: Outcome = "cancelled"
TIMEOUT: Outcome = "timeout"
LOST: Outcome = "lost"
SUPERSEDED: Outcome = "superseded"
TAKEOVER_TRIES = 3  # a pending step settled while it was being taken over: look again this often

Settlement = tuple[str, Any]  # (outcome, payload)


class Waiter:
    """One asker in this process: the settlement once it comes, and a future to wake the asker.

    The asker sleeps on ``wakeup`` with one timer for its next check (no ``wait_for``/``shield``
    per question). A settlement is recorded before the asker is woken, so one that arrives while
    the asker is busy with a check is found when it looks again.
    """

    __slots__ = ("loop", "wakeup", "outcome")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.wakeup: asyncio.Future[None] = loop.create_future()
        self.outcome: Settlement | None = None

    def settle(self, outcome: Settlement) -> None:
        """Record the settlement (the first one wins) and wake the asker; on the asker's loop."""
        if self.outcome is None:
            self.outcome = outcome
            self._ring()

    def _ring(self) -> None:
        if not self.wakeup.done():
            self.wakeup.set_result(None)

    def abort(self) -> None:
        """Cancel the asker's wait (chat_ws.testing.reset); on the asker's loop."""
        self.wakeup.cancel()

    async def wait(self, timeout: float) -> Settlement | None:
        """The settlement, waiting for it at most timeout seconds."""
        if self.outcome is None:
            if self.wakeup.done():
                self.wakeup = self.loop.create_future()
            timer = self.loop.call_later(timeout, self._ring)
            try:
                await self.wakeup
            finally:
                timer.cancel()
        return self.outcome


def server_id() -> str:
    """This process's name in presence records and settlement notices."""
    return runtime().server_id


def waiting_here() -> int:
    """How many askers wait in this process."""
    return len(runtime().waiters)


async def _listen(store: BaseStore) -> None:
    await store.subscribe(server_id(), _on_notice)


async def _on_notice(event: dict[str, Any]) -> None:
    """A settlement notice from another process, or a re-subscription after a Redis outage."""
    if event.get("event") == "resubscribed":
        await _recovered()
        await _check_lost()
        return
    payload = event.get("payload")
    if event.get("outcome") == ANSWERED and isinstance(payload, str):
        import json

        payload = json.loads(payload)
    _wake(str(event.get("p_key")), str(event.get("outcome")), payload)


async def _check_lost() -> None:
    """Fail askers whose question vanished from the store while it was unreachable."""
    store = get_store()
    for p_key in list(runtime().waiters):
        if await store.get_question(p_key) is None:
            _wake(p_key, LOST, "the question was lost while the store was unreachable")


def _wake(p_key: str, outcome: str, payload: Any) -> bool:
    waiter = runtime().waiters.get(p_key)
    if waiter is None or waiter.outcome is not None:
        return False
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is waiter.loop:
        waiter.settle((outcome, payload))
    else:  # settled from another thread's loop (async_to_sync): hand it over
        waiter.loop.call_soon_threadsafe(waiter.settle, (outcome, payload))
    return True


async def settle(question: Question, outcome: Outcome, payload: Any, *, payload_json: str | None = None) -> bool:
    """Wake the asker of a question already removed from the store, wherever it runs.

    Returns False when no asker listens any more (its task or its process is gone).
    ``payload_json``: an answer already encoded (chat_ws.codec.JSON), when the caller has it.
    """
    if question.server_id == server_id() or not question.server_id:
        woken = _wake(question.p_key, outcome, payload)
        if not woken:
            logger.debug("question %s settled (%s) with no asker here", question.p_key, outcome)
        return woken
    wire_payload = (payload_json or JSON.encode(payload)) if outcome == ANSWERED else payload
    try:
        listeners = await get_store().publish(
            question.server_id, {"p_key": question.p_key, "outcome": outcome, "payload": wire_payload}
        )
    except StoreUnavailable:
        logger.warning("could not notify %s of question %s", question.server_id, question.p_key)
        return False
    if not listeners:
        logger.info("the asker of %s (%s) no longer listens", question.p_key, question.server_id)
    return listeners > 0


def _answer(question: Question, message: Message) -> Answer:
    text = message.get("msg-text")
    return Answer(
        text=text if isinstance(text, str) else None,
        table=message.get("table"),
        message=message,
        p_key=question.p_key,
        client_id=question.client_id,
        conversation=question.conversation,
    )


async def ask(
    client_id: str,
    message: Message,
    *,
    conversation: str = "default",
    timeout: float | None = None,
    on_disconnect: OnDisconnect = "hold",
    meta: dict[str, Any] | None = None,
    step: str | None = None,
) -> Answer:
    """Send a question to client_id and wait for the answer (see chat_ws.api.ask)."""
    protocol.validate(message)
    if on_disconnect not in ("hold", "fail"):
        raise ValueError("on_disconnect must be 'hold' or 'fail'")
    _check_name("conversation", conversation)
    if step is not None:
        _check_name("step", step)
    conf = get_settings()
    wait = float(conf["QUESTION_TIMEOUT"] if timeout is None else timeout)
    if wait <= 0:
        raise ValueError("timeout must be positive")
    store = get_store()
    await _listen(store)
    p_key = new_p_key(client_id)
    question_message = dict(message)
    question_message["p-key"] = Keyword(p_key)
    now = time.time()
    question = Question(
        p_key=p_key,
        client_id=client_id,
        conversation=conversation,
        message=question_message,
        asked_at=now,
        expires_at=now + wait,
        on_disconnect=on_disconnect,
        server_id=server_id(),
        extra=dict(meta or {}),
        step=step,
        asker=next(runtime().askers),
    )
    waiters = runtime().waiters
    waiter = waiters[p_key] = Waiter(asyncio.get_running_loop())
    try:
        max_pending = conf["MAX_PENDING_PER_CLIENT"]
        state, stored = await store.ask_question(question, max_pending=max_pending)
        if state == "none" and delivery.local(client_id) is not None and await _recovered():
            state, stored = await store.ask_question(question, max_pending=max_pending)
        for _ in range(TAKEOVER_TRIES):
            if not (state == "pending" and isinstance(stored, Question)):
                break
            taken, taken_waiter = await _take_over(stored)
            if taken_waiter is not None:  # the question is on its way to the client already
                return await _wait_taken_over(taken, taken_waiter, conf["SETTLE_WAIT"])
            state, stored = await store.ask_question(question, max_pending=max_pending)  # settled meanwhile
        if isinstance(stored, JournalEntry):
            return _replayed(stored)
        if state == "pending":
            raise QuestionError(f"step {step!r} of {client_id} keeps changing hands", p_key=p_key, client_id=client_id)
        if stored is None:
            raise ClientGone(f"client {client_id} is not connected", p_key=p_key, client_id=client_id)
        if state == "open":
            try:
                await delivery.deliver(client_id, question_message)
            except (InvalidMessage, StoreUnavailable):
                await store.take(p_key, client_id)
                raise
        logger.debug("asked %s of %s in %s", p_key, client_id, conversation)
        metrics.QUESTIONS.labels("asked").inc()
        outcome, payload = await _await_settlement(waiter, question, wait, conf["SETTLE_WAIT"])
    except asyncio.CancelledError:
        await _abandon(question)
        raise
    finally:
        _unwait(p_key, waiter)
    return _result(question, outcome, payload)


def _unwait(p_key: str, waiter: Waiter) -> None:
    """Remove an asker's waiter, unless another asker (one that took its question over) holds
    the p-key now."""
    waiters = runtime().waiters
    if waiters.get(p_key) is waiter:
        del waiters[p_key]


async def _wait_taken_over(question: Question, waiter: Waiter, settle_wait: float) -> Answer:
    try:
        wait = max(0.001, question.expires_at - time.time())
        outcome, payload = await _await_settlement(waiter, question, wait, settle_wait)
    except asyncio.CancelledError:
        await _abandon(question)
        raise
    finally:
        _unwait(question.p_key, waiter)
    return _result(question, outcome, payload)


def _check_name(what: str, value: Any) -> None:
    if not isinstance(value, str) or not value or JOURNAL_SEPARATOR in value:
        raise ValueError(f"{what} must be a non-empty string without the character U+001F")


async def _take_over(pending_question: Question) -> tuple[Question, Waiter | None]:
    """Become the asker of a pending step question another asker (a run that died, or one still
    going) asked: the record names this process from now on, and the former asker is told it was
    superseded. Returns the question and this asker's waiter, or no waiter when the question was
    settled meanwhile (the caller looks at the journal again)."""
    waiters = runtime().waiters
    mine = dataclasses.replace(pending_question, server_id=server_id(), asker=next(runtime().askers))
    previous = waiters.get(mine.p_key)
    waiter = waiters[mine.p_key] = Waiter(asyncio.get_running_loop())
    taken = False
    try:
        taken = await get_store().take_over(mine)
    finally:
        if not taken:
            _unwait(mine.p_key, waiter)
            if previous is not None:
                waiters[mine.p_key] = previous
    if not taken:
        return mine, None
    reason = "another asker took the question over"
    if previous is not None:
        previous.settle((SUPERSEDED, reason))
    elif pending_question.server_id and pending_question.server_id != server_id():
        await settle(pending_question, SUPERSEDED, reason)
    logger.info("took over question %s (step %s) of %s", mine.p_key, mine.step, mine.client_id)
    metrics.QUESTIONS.labels("taken-over").inc()
    return mine, waiter


def _replayed(entry: JournalEntry) -> Answer:
    """The journaled answer of a step asked before: returned at once, nothing is sent."""
    metrics.QUESTIONS.labels("replayed").inc()
    logger.debug("step %s of %s replayed from the journal", entry.question.step, entry.question.client_id)
    return _answer(entry.question, entry.answer)


async def end_conversation(client_id: str, conversation: str, *, forget: bool = False) -> None:
    """The asker is done with the conversation's answers: they are consumed (the sweep will not
    hand them to answer_orphaned); with forget, its journal is dropped (a new run asks afresh)."""
    _check_name("conversation", conversation)
    await get_store().consume(client_id, conversation, forget=forget)


async def hand_over_unconsumed(now: float, wait: float, limit: int) -> int:
    """Hand over journaled answers nobody consumed within wait seconds (the asker died between
    the answer and its next step); returns how many. Each goes to ``answer_orphaned`` in the
    process that serves the client's socket, where a conversation can go on, or here when the
    client has no open socket. At least once: a receiver may see an answer again and must
    record it idempotently."""
    entries = await get_store().unconsumed_answers(now - wait, now, limit)
    for entry in entries:
        question = entry.question
        logger.info("answer to %s (step %s) not consumed; handing it over", question.p_key, question.step)
        try:
            if not await delivery.hand_over(question.client_id, entry_to_json(entry)):
                await orphaned(entry)
        except Exception:
            logger.exception("handing over the answer to %s failed; the next sweep tries again", question.p_key)
    return len(entries)


async def orphaned(entry: JournalEntry | str) -> None:
    """Send answer_orphaned for a journaled answer (an entry, or its JSON from another process)."""
    if isinstance(entry, str):
        entry = entry_from_json(entry)
    await _send_orphaned(entry.question, entry.answer)


async def _send_orphaned(question: Question, answer: Message) -> None:
    """answer_orphaned for an answer whose asker is gone, counted as orphaned."""
    metrics.QUESTIONS.labels("orphaned").inc()
    await signals.answer_orphaned.asend(sender=Answer, question=question, answer=_answer(question, answer))


async def _recovered() -> int:
    """The store lost this process's records (an outage, a restart without persistence): register
    the local sockets again, then tell receivers of ``store_recovered``. Returns how many."""
    from chat_ws import presence  # presence imports this module

    restored = await presence.restore_local()
    await signals.store_recovered.asend(sender=BaseStore, restored=restored)
    return restored


async def _await_settlement(waiter: Waiter, question: Question, wait: float, settle_wait: float) -> Settlement:
    loop = waiter.loop
    deadline = loop.time() + wait
    check_every = float(get_settings()["QUESTION_CHECK_INTERVAL"])
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        settled = await waiter.wait(min(remaining, check_every))
        if settled is not None:
            return settled
        if remaining > check_every:
            found = await _still_pending(question)
            if found is None:
                # settled at this very moment, or lost with the store's data
                return await waiter.wait(settle_wait) or (
                    LOST, "the question vanished from the store (was Redis restarted or flushed?)"
                )
            if isinstance(found, Question) and not found.held_by(question):
                return SUPERSEDED, "another asker took the question over"
    if await _withdraw(question) is not None:
        reason = f"no answer within {wait:g}s"
        await tell_cleared(question, TIMEOUT, reason)
        return TIMEOUT, reason
    if question.step is not None and await _taken_over(question):
        return SUPERSEDED, "another asker took the question over"
    # Someone settled it at the same moment; its notice is on its way.
    return await waiter.wait(settle_wait) or (LOST, "the question was settled elsewhere but its outcome never arrived")


async def _still_pending(question: Question) -> Question | bool | None:
    """The question's record, None when it is gone, True when the store cannot tell now."""
    try:
        return await get_store().get_question(question.p_key, question.client_id)
    except StoreUnavailable:
        return True  # cannot tell now; look again at the next check


async def _taken_over(question: Question) -> bool:
    """True when another asker holds the step question now (it times out there, not here)."""
    found = await _still_pending(question)
    return isinstance(found, Question) and not found.held_by(question)


async def _withdraw(question: Question) -> Question | None:
    """Remove an asker's own question from the store: a step question only while this asker
    holds it, in one step (another asker may take it over at any moment)."""
    return await get_store().take(
        question.p_key, question.client_id, asker=question if question.step is not None else None
    )


def clear_message(question: Question, outcome: Outcome | None = None, description: str = "") -> Message:
    """The clear-promise-keys message that tells the client to forget a settled question.

    After an answer it names the key only. A question withdrawn without an answer also carries
    ``reason`` (``cancelled`` or ``timeout``) and a human ``description``; clients that do not
    know these fields ignore them.
    """
    message: Message = {
        "dispatch-key": protocol.CLEAR_PROMISE_KEYS,
        "promise-keys": [Keyword(question.p_key)],
    }
    if outcome is not None:
        message["reason"] = Keyword(outcome)
        message["description"] = description or str(outcome)
    return message


async def tell_cleared(question: Question, outcome: Outcome, description: str) -> None:
    """Tell the client that a question it was asked is withdrawn; a client already gone is fine."""
    try:
        await delivery.deliver(question.client_id, clear_message(question, outcome, description))
    except Exception:  # the client may be gone; the question is settled either way
        logger.debug("could not send clear-promise-keys for %s", question.p_key, exc_info=True)


async def _abandon(question: Question) -> None:
    """The asker was cancelled: remove its question so nobody answers into the void."""
    if runtime().stopping:  # chat_ws.shutdown: the question stays pending for the reconnect elsewhere
        return
    try:
        if await asyncio.shield(_withdraw(question)) is not None:  # not when another asker holds it now
            await asyncio.shield(tell_cleared(question, CANCELLED, "the server withdrew the question"))
    except Exception:
        logger.warning("could not withdraw question %s of a cancelled asker", question.p_key)


def _result(question: Question, outcome: str, payload: Any) -> Answer:
    kw = {"p_key": question.p_key, "client_id": question.client_id}
    metrics.QUESTIONS.labels(outcome).inc()
    if outcome == ANSWERED:
        metrics.TIME_TO_ANSWER.observe(max(0.0, time.time() - question.asked_at))
        return _answer(question, payload)
    if outcome == TIMEOUT:
        raise AnswerTimeout(str(payload), **kw)
    if outcome == GONE:
        raise ClientGone(f"client {question.client_id} is gone: {payload}", **kw)
    if outcome == CANCELLED:
        raise QuestionCancelled(str(payload or "cancelled"), **kw)
    if outcome == SUPERSEDED:
        raise QuestionSuperseded(str(payload or "superseded"), **kw)
    if outcome == LOST:
        raise StoreLost(str(payload), **kw)
    raise QuestionError(f"unknown outcome {outcome}", **kw)


async def answer(client_id: str, message: Message) -> Question | None:
    """Resolve the most recent pending question of client_id named in the answer's promise-keys.

    Returns the question, or None when no pending question matches. Tells the client to forget
    the key.
    """
    keys = protocol.promise_keys(message)
    protocol.optional_text(message, "msg-text")
    store = get_store()
    wire = JSON.encode(message) if keys and store.answers_as_json else None  # for the journal and the notice
    question = await store.resolve(client_id, keys, message, time.time(), answer_json=wire) if keys else None
    if question is None:
        logger.warning("answer from %s matches no pending question (%d keys)", client_id, len(keys))
        return None
    logger.debug("answer from %s resolves %s", client_id, question.p_key)
    if not await settle(question, ANSWERED, message, payload_json=wire):
        await _send_orphaned(question, message)
    return question


async def cancel(p_key: str, reason: str = "cancelled") -> bool:
    """Cancel one pending question; its asker raises QuestionCancelled. False if already gone."""
    question = await get_store().take(p_key)
    if question is None:
        return False
    await settle(question, CANCELLED, reason)
    await tell_cleared(question, CANCELLED, reason)
    return True


async def reject_client(client_id: str, reason: str, *, only_fail_fast: bool = False) -> int:
    """Fail the client's pending questions with ClientGone; return how many."""
    questions = await get_store().take_client(client_id, only_fail_fast=only_fail_fast)
    for question in questions:
        await settle(question, GONE, reason)
    return len(questions)


async def pending(client_id: str | None = None, conversation: str | None = None) -> list[Question]:
    """Pending questions, oldest first."""
    return await get_store().pending(client_id, conversation)


async def resend(client_id: str, questions: list[Question] | None = None) -> int:
    """Send every pending question of client_id again, in order, with its original p-key
    (questions: those the caller already read from the store)."""
    if questions is None:
        questions = await get_store().client_questions(client_id)
    for question in questions:
        await delivery.deliver(client_id, question.message)
    return len(questions)
