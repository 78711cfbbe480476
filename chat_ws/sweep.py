"""The sweep: liveness checks, evictions, orphan removal and the last-seen write-back.

One pass, :func:`sweep`, is what the ``chat_ws_sweep`` command, the Celery task and the admin
call. A pass takes a short store lock so that passes started in several places do not overlap,
and every eviction is claimed atomically in the store (``evict``), so even passes that do
overlap (a lock that lapsed) forget each client once.
"""

from __future__ import annotations

import asyncio

import json
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from functools import reduce
from operator import or_
from typing import Any

from channels.db import database_sync_to_async

from chat_ws import delivery, metrics, presence, promises, protocol, sessions
from chat_ws.conf import get_settings
from chat_ws.exceptions import StoreUnavailable
from chat_ws.store import get_store
from chat_ws.store.base import BaseStore, Connection

logger = logging.getLogger(__name__)

FORCE_CONCURRENCY = 50  # clients forgotten at once by force()

LOCK = "sweep"  # store lock held during one pass
LAST_SWEEP = "sweep:last"  # store value: JSON of the last finished pass
SEEN_MARK = "sweep:seen-mark"  # store value: newest last-seen time already written back
LAST_SWEEP_TTL = 7 * 24 * 3600  # seconds the last pass is remembered
SEEN_MARK_TTL = 24 * 3600  # seconds; when the mark lapses the next pass writes every record back
WRITE_BATCH = 100  # session rows per UPDATE (8 parameters each, under SQLite's old limit of 999)

INACTIVE = "inactive"  # no answer to alive?
GRACE_EXPIRED = presence.GRACE_EXPIRED  # did not reconnect within RECONNECT_GRACE
FORCED = "forced"  # forgotten on request (command, admin)
UNKNOWN_CLIENT = "unknown-client"  # a question's client has no presence record
LOST = "lost"  # session row closed by the sweep: its process died before writing the close


@dataclass
class SweepReport:
    """What one sweep did (or, with ``dry_run``, would do)."""

    alive_sent: int = 0  # alive? checks sent to silent clients
    awaiting: int = 0  # marked clients still inside the response window
    inactive: int = 0  # clients forgotten for not answering alive?
    grace_expired: int = 0  # disconnected clients forgotten after the reconnect grace
    forced: int = 0  # clients forgotten on request
    rejected: int = 0  # pending questions of forgotten clients, failed with ClientGone
    expired: int = 0  # questions past their timeout, failed with AnswerTimeout
    orphaned: int = 0  # questions of clients without a presence record, failed with ClientGone
    handed_over: int = 0  # journaled answers nobody consumed, sent to answer_orphaned again
    sessions_lost: int = 0  # open session rows whose connection no presence record names (process died)
    pruned: int = 0  # index entries whose record had expired
    written: int = 0  # last-seen times written to ClientSession rows
    errors: int = 0  # steps that failed and are retried by the next pass
    dry_run: bool = False
    skipped: bool = False  # another sweep held the lock
    started_at: float = 0.0  # unix seconds (the pass's clock)
    duration: float = 0.0  # seconds

    @property
    def evicted(self) -> int:
        """Clients forgotten by this pass."""
        return self.inactive + self.grace_expired + self.forced

    def counts(self) -> dict[str, int]:
        """The integer counts by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type in ("int", int)}

    def as_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        return asdict(self)

    def __add__(self, other: SweepReport) -> SweepReport:
        merged = SweepReport(**self.as_dict())
        for name, value in other.counts().items():
            setattr(merged, name, getattr(merged, name) + value)
        merged.skipped = self.skipped and other.skipped
        merged.duration = self.duration + other.duration
        return merged

    def summary(self) -> str:
        """One line for logs and command output."""
        if self.skipped:
            return "another sweep holds the lock; nothing done"
        parts = [f"{value} {name.replace('_', ' ')}" for name, value in self.counts().items() if value]
        text = ", ".join(parts) if parts else "nothing to do"
        return f"dry run, would do: {text}" if self.dry_run else f"swept: {text}"


# ---------------------------------------------------------------------- the pass
async def sweep(*, now: float | None = None, dry_run: bool = False) -> SweepReport:
    """Run one sweep pass; ``now`` (unix seconds) replaces the clock, ``dry_run`` changes nothing.

    Raises StoreUnavailable when the store cannot be reached.
    """
    conf = get_settings()
    now = time.time() if now is None else now
    store = get_store()
    report = SweepReport(dry_run=dry_run, started_at=now)
    started = time.monotonic()
    if dry_run:
        await _pass(store, conf, now, report)
        report.duration = time.monotonic() - started
        logger.info("%s", report.summary())
        return report
    owner = f"{promises.server_id()}:{secrets.token_hex(6)}"
    if not await store.acquire_lock(LOCK, owner, float(conf["SWEEP_LOCK_TTL"])):
        report.skipped = True
        logger.info("sweep skipped: another sweep holds the lock")
        return report
    try:
        await _pass(store, conf, now, report)
        report.duration = time.monotonic() - started
        await store.set_value(LAST_SWEEP, json.dumps(report.as_dict()), LAST_SWEEP_TTL)
    finally:
        try:
            await store.release_lock(LOCK, owner)
        except StoreUnavailable:
            logger.warning("could not release the sweep lock; it lapses by itself")
    log = logger.info if report.counts() != SweepReport().counts() else logger.debug
    log("%s (%.3fs)", report.summary(), report.duration)
    return report


async def _pass(store: BaseStore, conf: dict[str, Any], now: float, report: SweepReport) -> None:
    batch = int(conf["SWEEP_BATCH"])
    await _write_back(store, batch, report)
    await _expire_questions(store, now, batch, report)
    await _check_silent(store, conf, now, batch, report)
    await _expire_grace(store, conf, now, batch, report)
    await _remove_orphans(store, batch, report)
    if not report.dry_run:
        wait = float(conf["ANSWER_CONSUME_TIMEOUT"])
        report.handed_over = await promises.hand_over_unconsumed(now, wait, batch)
    await _close_lost_sessions(store, batch, report)
    report.pruned = await store.prune_indexes(remove=not report.dry_run)


async def _check_silent(
    store: BaseStore, conf: dict[str, Any], now: float, batch: int, report: SweepReport
) -> None:
    """alive? to clients silent too long; forget marked ones whose response window has passed.

    A mark is cleared by any message, so a marked client has been silent since its mark: looking
    among clients silent for the response window finds every mark that is due, including those
    of checks sent from the admin, oldest first.
    """
    inactive_before = now - float(conf["INACTIVITY_TIMEOUT"])
    due_before = now - float(conf["ALIVE_RESPONSE_TIMEOUT"])
    silent = await store.silent_since(max(inactive_before, due_before), limit=batch)
    for record in await store.get_connections(silent):
        if not record.is_open:
            continue
        if record.alive_sent_at is not None:
            if record.alive_sent_at <= due_before:
                await _evict(store, record, INACTIVE, report)
            else:
                report.awaiting += 1
        elif record.last_seen < inactive_before:
            report.alive_sent += 1
            if not report.dry_run:
                await _send_alive(store, record.client_id, now)


async def _expire_grace(
    store: BaseStore, conf: dict[str, Any], now: float, batch: int, report: SweepReport
) -> None:
    """Forget clients that stayed away longer than the reconnect grace."""
    ids = await store.closed_since(now - float(conf["RECONNECT_GRACE"]), limit=batch)
    for record in await store.get_connections(ids):
        if record.closed_at is not None:
            await _evict(store, record, GRACE_EXPIRED, report)


async def _evict(store: BaseStore, record: Connection, reason: str, report: SweepReport) -> None:
    client_id = record.client_id
    if report.dry_run:
        _count(report, reason)
        report.rejected += len(await store.client_questions(client_id))
        return
    expect = {"alive_sent_at": record.alive_sent_at} if reason == INACTIVE else {"closed_at": record.closed_at}
    if await _forget(client_id, reason, report, **expect) is not None:
        _count(report, reason)  # not evicted: it answered, reconnected, or another sweep took it


async def _forget(client_id: str, reason: str, report: SweepReport, **expect: float | None) -> int | None:
    """presence.forget (or, with an expected state, presence.evict), counting its rejected
    questions; None when the client was not forgotten or it failed (logged)."""
    try:
        if expect:
            rejected = await presence.evict(client_id, reason, **expect)
            if rejected is None:
                return None
        else:
            rejected = await presence.forget(client_id, reason)
    except StoreUnavailable:
        raise
    except Exception:
        logger.exception("forgetting client %s (%s) failed; its leftovers go next pass", client_id, reason)
        report.errors += 1
        return None
    report.rejected += rejected  # after the await: concurrent forgets must not lose counts
    return rejected


def _count(report: SweepReport, reason: str) -> None:
    """Count one forgotten client in the report and, unless it is a dry run, in the metrics."""
    name = {INACTIVE: "inactive", GRACE_EXPIRED: "grace_expired"}.get(reason, "forced")
    setattr(report, name, getattr(report, name) + 1)
    if not report.dry_run:
        metrics.SWEEP_EVICTIONS.labels(reason if name != "forced" else FORCED).inc()


async def _send_alive(store: BaseStore, client_id: str, now: float) -> None:
    # Mark first: an alive-confirm arriving right after the message must find the mark to clear.
    await store.mark_alive_sent(client_id, now)
    try:
        await delivery.deliver(client_id, {"dispatch-key": protocol.ALIVE_CHECK})
    except Exception:
        logger.warning("could not send alive? to %s", client_id, exc_info=True)


async def _expire_questions(store: BaseStore, now: float, batch: int, report: SweepReport) -> None:
    """Fail questions past their timeout (their asker died, or its timer has not fired yet)."""
    if report.dry_run:
        report.expired += await store.count_expired(now)
        return
    for question in await store.expired_questions(now, limit=batch):
        reason = f"no answer within {question.expires_at - question.asked_at:g}s"
        await promises.settle(question, promises.TIMEOUT, reason)
        report.expired += 1
        await promises.tell_cleared(question, promises.TIMEOUT, reason)


async def _remove_orphans(store: BaseStore, batch: int, report: SweepReport) -> None:
    """Fail the questions of clients that have no presence record at all."""
    for client_id in await store.orphaned_clients(limit=batch):
        if report.dry_run:
            report.orphaned += len(await store.client_questions(client_id))
            continue
        for question in await store.take_orphaned(client_id):
            await promises.settle(question, promises.GONE, UNKNOWN_CLIENT)
            report.orphaned += 1


async def _close_lost_sessions(store: BaseStore, batch: int, report: SweepReport) -> None:
    """Close session rows whose connection is gone without its close reaching the database (the
    process that served it died with the close still queued): no presence record names the row's
    channel. Rows heard from least recently are looked at first, ``batch`` per pass."""
    try:
        rows = await sessions.open_rows(batch)
        records = {r.client_id: r for r in await store.get_connections(list({cid for _, cid, _ in rows}))}
        lost = [row_id for row_id, cid, channel in rows if cid not in records or records[cid].channel_name != channel]
        if lost and not report.dry_run:
            lost_count = await sessions.close_rows(lost, LOST)
        else:
            lost_count = len(lost)
    except StoreUnavailable:
        raise
    except Exception:
        logger.exception("closing lost session rows failed; the next pass retries")
        report.errors += 1
        return
    report.sessions_lost += lost_count


async def _write_back(store: BaseStore, batch: int, report: SweepReport) -> None:
    """Write the last-seen times heard since the previous pass to the session rows."""
    raw = await store.get_value(SEEN_MARK)
    mark = float(raw) if raw else 0.0
    records = await store.seen_since(mark, limit=batch)
    if not records:
        return
    try:
        report.written += await _update_last_seen(records, dry_run=report.dry_run)
    except Exception:
        logger.exception("writing last-seen times failed; the next pass retries")
        report.errors += 1
        return
    if not report.dry_run:
        await store.set_value(SEEN_MARK, repr(max(r.last_seen for r in records)), SEEN_MARK_TTL)


@database_sync_to_async
@sessions.retry_conflicts
def _update_last_seen(records: list[Connection], *, dry_run: bool = False) -> int:
    """One UPDATE per batch: each connection's row gets its record's newer last-seen time.

    Returns how many rows were (with ``dry_run``: would be) given a newer time.
    """
    from datetime import datetime, timezone

    from django.db.models import Case, DateTimeField, F, Q, Value, When

    from chat_ws.models import ClientSession

    written = 0
    for start in range(0, len(records), WRITE_BATCH):
        chunk = records[start : start + WRITE_BATCH]
        due: list[tuple[Q, datetime]] = []
        for record in chunk:
            seen = datetime.fromtimestamp(record.last_seen, tz=timezone.utc)
            newer = Q(last_seen_at__lt=seen) | Q(last_seen_at__isnull=True)
            due.append((Q(channel_name=record.channel_name) & newer, seen))
        rows = ClientSession.objects.filter(
            Q(client_id__in={r.client_id for r in chunk}), reduce(or_, (q for q, _ in due))
        )
        if dry_run:
            written += rows.count()
            continue
        whens = [When(q, then=Value(seen)) for q, seen in due]
        written += rows.update(
            last_seen_at=Case(*whens, default=F("last_seen_at"), output_field=DateTimeField())
        )
    return written


# ---------------------------------------------------------------------- on request
async def force(client_ids: Iterable[str] | None = None, *, reason: str = FORCED) -> SweepReport:
    """Forget clients now, closing their sockets and failing their questions.

    ``None`` forgets every client with a presence record, then every question left without a
    client. ``forced`` counts the clients that had a record or questions.
    """
    store = get_store()
    report = SweepReport(started_at=time.time())
    started = time.monotonic()
    if client_ids is None:
        ids = [c.client_id for c in await store.connections()]
    else:
        ids = list(dict.fromkeys(client_ids))

    async def one(client_id: str) -> None:
        known = await store.connection(client_id) is not None
        rejected = await _forget(client_id, reason, report)
        if rejected is not None and (known or rejected > 0):
            _count(report, FORCED)

    for start in range(0, len(ids), FORCE_CONCURRENCY):
        await asyncio.gather(*(one(client_id) for client_id in ids[start : start + FORCE_CONCURRENCY]))
    if client_ids is None:
        await _remove_orphans(store, int(get_settings()["SWEEP_BATCH"]), report)
    report.duration = time.monotonic() - started
    logger.info(
        "forced out %d client(s) (%s); %d question(s) rejected",
        report.forced,
        reason,
        report.rejected + report.orphaned,
    )
    return report


async def check_alive(client_ids: Iterable[str], *, now: float | None = None) -> int:
    """Send alive? to connected clients now; the sweep forgets those that do not answer."""
    store = get_store()
    now = time.time() if now is None else now
    sent = 0
    for record in await store.get_connections(list(dict.fromkeys(client_ids))):
        if record.is_open:
            await _send_alive(store, record.client_id, now)
            sent += 1
    return sent


async def last_sweep() -> dict[str, Any] | None:
    """The report of the last finished pass, or None."""
    raw = await get_store().get_value(LAST_SWEEP)
    return json.loads(raw) if raw else None
