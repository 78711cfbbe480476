"""Which clients are connected, where, and since when; forgetting a client."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from chat_ws import delivery, promises, security, sessions, signals
from chat_ws.conf import get_settings
from chat_ws.exceptions import WS_4001_REPLACED, WS_4002_FORGOTTEN
from chat_ws.runtime import runtime
from chat_ws.store import get_store

logger = logging.getLogger(__name__)

GRACE_EXPIRED = "grace-expired"  # reason: did not reconnect within RECONNECT_GRACE

async def connected(endpoint: Any) -> None:
    """Register a new socket for its client-id, replacing any older one, and re-send questions."""
    client_id = endpoint.client_id
    _cancel_grace(client_id)
    previous_local = delivery.register(endpoint)
    previous, pending = await get_store().connect_client(
        client_id, promises.server_id(), endpoint.channel_name, time.time()
    )
    if previous_local is not None:
        await previous_local.shut(WS_4001_REPLACED, "replaced")
    elif previous is not None and previous.is_open and previous.channel_name != endpoint.channel_name:
        await delivery.close_channel(previous.channel_name, WS_4001_REPLACED, "replaced")
    sessions.opened(client_id, endpoint.channel_name, promises.server_id(), endpoint.scope)
    resent = await promises.resend(client_id, pending)
    logger.info(
        "client %s connected%s%s",
        client_id,
        " (replacing an older socket)" if previous is not None and previous.is_open else "",
        f", {resent} pending question(s) re-sent" if resent else "",
    )


async def disconnected(endpoint: Any, code: int) -> None:
    """Record a closed socket: hold its questions for the grace period, close its session row."""
    client_id = endpoint.client_id
    delivery.unregister(endpoint)
    reason = endpoint.close_reason or f"closed-{code}"
    if not endpoint.session_closed:
        sessions.closed(endpoint.channel_name, reason)
    if endpoint.closed_by_server:
        return  # replaced or forgotten: the records already belong to someone else or are gone
    now = time.time()
    if not await get_store().close_connection(client_id, endpoint.channel_name, now):
        return
    failed = await promises.reject_client(client_id, "disconnected", only_fail_fast=True)
    _start_grace(client_id, now)
    logger.info(
        "client %s disconnected (code %s); %s fail-fast question(s) rejected", client_id, code, failed
    )


def _start_grace(client_id: str, closed_at: float) -> None:
    grace = float(get_settings()["RECONNECT_GRACE"])
    loop = asyncio.get_running_loop()
    _cancel_grace(client_id)
    runtime().grace_timers[client_id] = loop.call_later(grace, _grace_expired, client_id, closed_at)


def _cancel_grace(client_id: str) -> None:
    timer = runtime().grace_timers.pop(client_id, None)
    if timer is not None:
        timer.cancel()


def _grace_expired(client_id: str, closed_at: float) -> None:
    state = runtime()
    state.grace_timers.pop(client_id, None)
    task = asyncio.get_running_loop().create_task(_forget_if_still_gone(client_id, closed_at))
    state.background.add(task)
    task.add_done_callback(state.background.discard)


async def _forget_if_still_gone(client_id: str, closed_at: float) -> None:
    try:
        await evict(client_id, GRACE_EXPIRED, closed_at=closed_at)
    except Exception:
        logger.exception("grace expiry of %s failed; the sweep will retry", client_id)


async def touch(client_id: str) -> bool:
    """Record that the client was heard from (ping, alive-confirm).

    A socket served here whose record vanished (a Redis restart without persistence) is
    registered again.
    """
    now = time.time()
    if await get_store().touch(client_id, now):
        return True
    endpoint = delivery.local(client_id)
    if endpoint is None:
        return False
    return await _restore(endpoint, now)


async def _restore(endpoint: Any, now: float) -> bool:
    if endpoint.is_closed:
        return False
    await get_store().open_connection(endpoint.client_id, promises.server_id(), endpoint.channel_name, now)
    logger.info("re-registered client %s after its records vanished", endpoint.client_id)
    return True


async def restore_local() -> int:
    """Register again every socket of this process whose presence record is missing."""
    restored = 0
    now = time.time()
    for endpoint in delivery.endpoints():
        if await get_store().connection(endpoint.client_id) is None and await _restore(endpoint, now):
            restored += 1
    return restored



async def forget(client_id: str, reason: str) -> int:
    """Remove every trace of a client: fail its questions, close its socket, drop its records.

    Returns how many pending questions were rejected.
    """
    rejected = await _forget(client_id, reason, after_eviction=False)
    assert rejected is not None
    return rejected


async def evict(
    client_id: str, reason: str, *, alive_sent_at: float | None = None, closed_at: float | None = None
) -> int | None:
    """Forget the client only if its presence record is still in the state the caller saw.

    With ``alive_sent_at``: still connected and unanswered since that alive? check; with
    ``closed_at``: still disconnected since then. The store claims the record atomically, so of
    a reconnect (in any process), an answer and two evictors exactly one wins; a client that
    reconnects between the claim and the forget keeps its questions. Returns how many questions
    were rejected, or None when the client was not evicted.
    """
    if not await get_store().evict(client_id, alive_sent_at=alive_sent_at, closed_at=closed_at):
        return None
    return await _forget(client_id, reason, after_eviction=True)


async def _forget(client_id: str, reason: str, *, after_eviction: bool) -> int | None:
    _cancel_grace(client_id)
    endpoint = delivery.detach(client_id)  # nothing may re-register it while it is forgotten
    forgotten = await get_store().forget_client(
        client_id, claims=[security.binding_name(client_id)], only_if_absent=after_eviction
    )
    if forgotten is None:  # it came back after the eviction: leave the new connection alone
        if endpoint is not None and not endpoint.is_closed and delivery.local(client_id) is None:
            delivery.register(endpoint)
        logger.info("client %s reconnected while being evicted (%s); kept", client_id, reason)
        return None
    questions, channel_name = forgotten
    if endpoint is not None:
        endpoint.session_closed = True  # closed below with the others, with the real reason
    await delivery.close(client_id, WS_4002_FORGOTTEN, reason, endpoint, channel_name)
    sessions.client_closed(client_id, reason)
    for question in questions:  # askers wake last, when every trace is already gone
        await promises.settle(question, promises.GONE, reason)
    logger.info("forgot client %s (%s); %d question(s) rejected", client_id, reason, len(questions))
    return len(questions)


def pending_grace_timers() -> int:
    """How many reconnect-grace timers run in this process."""
    return len(runtime().grace_timers)
