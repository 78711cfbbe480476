"""ClientSession rows: one per connection, for history and the admin, written in batches.

Rows are not written on the handshake path: opening and closing a connection queue an
operation, and a writer task per event loop applies the queue in order, one transaction per
batch, on the database thread. ``flush()`` waits until everything queued so far is written.
Operations still queued when a process dies are lost; the sweep closes rows left open whose
connection no presence record names any more (``lost``), and ``chat_ws_sweep --force-all``
closes everything.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, TypeVar

from channels.db import database_sync_to_async
from django.db import OperationalError, connections, router, transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

REASON_MAX = 64  # characters of a close reason kept
BATCH_MAX = 500  # operations written in one transaction at most
CONFLICT_TRIES = 4  # times a write is tried when the database aborts it for a conflict
# SQLSTATEs of a transaction aborted for a conflict with another, which succeeds when tried again:
# PostgreSQL's deadlock_detected (a server's batch and the sweep's UPDATE lock rows in different
# orders) and serialization_failure.
CONFLICTS = frozenset({"40P01", "40001"})

_T = TypeVar("_T")


def _conflict(exc: BaseException) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) in CONFLICTS


def retry_conflicts(write: Callable[..., _T]) -> Callable[..., _T]:
    """Run a write (a transaction of its own) again when the database aborted it for a conflict
    with another transaction, up to CONFLICT_TRIES times; other errors pass at once. The one
    copy of this rule: every writer of session rows goes through it."""

    @functools.wraps(write)
    def tried(*args: Any, **kwargs: Any) -> _T:
        for attempt in range(1, CONFLICT_TRIES + 1):
            try:
                return write(*args, **kwargs)
            except OperationalError as exc:
                if attempt == CONFLICT_TRIES or not _conflict(exc):
                    raise
                logger.info("session rows: %s (try %d of %d); writing again", exc, attempt, CONFLICT_TRIES)
        raise AssertionError("unreachable")

    return tried


@dataclass
class _Open:
    fields: dict[str, Any]


@dataclass
class _Close:
    column: str  # "channel_name" (one connection) or "client_id" (every connection of a client)
    value: str
    reason: str
    at: datetime = field(default_factory=timezone.now)


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")[:512]
    return ""


@retry_conflicts
def _write(batch: list[_Open | _Close]) -> None:
    """Apply a batch in order: each run of opens as one bulk insert, each run of closes by the same
    column as one prepared UPDATE executed for every row (the ORM would compile one per row)."""
    from chat_ws.models import ClientSession

    using = router.db_for_write(ClientSession)
    with transaction.atomic(using=using):
        start = 0
        while start < len(batch):
            first = batch[start]
            end = start + 1
            if isinstance(first, _Open):
                while end < len(batch) and isinstance(batch[end], _Open):
                    end += 1
                opens: list[_Open] = batch[start:end]  # type: ignore[assignment]
                ClientSession.objects.using(using).bulk_create([ClientSession(**op.fields) for op in opens])
            else:
                while end < len(batch) and isinstance(batch[end], _Close) and batch[end].column == first.column:  # type: ignore[union-attr]
                    end += 1
                _close_run(using, batch[start:end])  # type: ignore[arg-type]
            start = end


def _close_run(using: str, run: list[_Close]) -> None:
    """Close the open rows named by a run of closes on one column, in order (a second close of
    the same row finds it closed, as it would one by one)."""
    from chat_ws.models import ClientSession

    connection = connections[using]
    quote, field = connection.ops.quote_name, ClientSession._meta.get_field
    sql = (
        f"UPDATE {quote(ClientSession._meta.db_table)} SET {quote(field('closed_at').column)} = %s, "
        f"{quote(field('close_reason').column)} = %s WHERE {quote(field(run[0].column).column)} = %s "
        f"AND {quote(field('closed_at').column)} IS NULL"
    )
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(adapt(op.at), op.reason[:REASON_MAX], op.value) for op in run])


class _Writer:
    """The queue and writer task of one event loop."""

    def __init__(self) -> None:
        self.ops: list[_Open | _Close] = []
        self.queued = 0
        self.written = 0
        self.wakeup = asyncio.Event()
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.task: asyncio.Task[None] | None = None

    def add(self, op: _Open | _Close) -> None:
        self.ops.append(op)
        self.queued += 1
        self.wakeup.set()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="chat_ws:sessions")

    async def _run(self) -> None:
        write = database_sync_to_async(_write)
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.ops:
                batch = self.ops[:BATCH_MAX]
                del self.ops[: len(batch)]
                try:
                    await write(batch)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("could not write %d session operation(s)", len(batch))
                self.written += len(batch)
                self._release()

    def _release(self) -> None:
        still = []
        for target, future in self.waiters:
            if target <= self.written:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        self.waiters = still

    async def flush(self) -> None:
        if self.written >= self.queued:
            return
        future = asyncio.get_running_loop().create_future()
        self.waiters.append((self.queued, future))
        await future


_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Writer] = weakref.WeakKeyDictionary()


def _writer() -> _Writer:
    loop = asyncio.get_running_loop()
    found = _writers.get(loop)
    if found is None:
        found = _writers[loop] = _Writer()
    return found


def opened(client_id: str, channel_name: str, server_id: str, scope: dict[str, Any]) -> None:
    """Queue the row of a new connection."""
    user = scope.get("user")
    client = scope.get("client") or ("", 0)
    now = timezone.now()
    _writer().add(
        _Open(
            {
                "client_id": client_id,
                "channel_name": channel_name,
                "server_id": server_id,
                "user_id": user.pk if user is not None and getattr(user, "is_authenticated", False) else None,
                "remote_addr": str(client[0] or "")[:64] or None,
                "user_agent": _header(scope, b"user-agent"),
                "opened_at": now,
                "last_seen_at": now,
            }
        )
    )


def closed(channel_name: str, reason: str) -> None:
    """Queue the closing of one connection's row."""
    _writer().add(_Close("channel_name", channel_name, reason))


def client_closed(client_id: str, reason: str) -> None:
    """Queue the closing of every open row of a client-id."""
    _writer().add(_Close("client_id", client_id, reason))


async def flush() -> None:
    """Wait until every operation queued so far in this event loop is written."""
    await _writer().flush()


@database_sync_to_async
def count_open(client_id_prefix: str = "") -> int:
    """How many rows of clients whose id starts with the prefix are not closed (written rows only)."""
    from chat_ws.models import ClientSession

    rows = ClientSession.objects.filter(closed_at__isnull=True)
    if client_id_prefix:
        rows = rows.filter(client_id__startswith=client_id_prefix)
    return rows.count()


@database_sync_to_async
def open_rows(limit: int) -> list[tuple[int, str, str]]:
    """(id, client_id, channel_name) of open rows, those heard from least recently first."""
    from django.db.models import F

    from chat_ws.models import ClientSession

    rows = ClientSession.objects.filter(closed_at__isnull=True).order_by(F("last_seen_at").asc(nulls_first=True), "id")
    return list(rows.values_list("id", "client_id", "channel_name")[:limit])


@database_sync_to_async
@retry_conflicts
def close_rows(ids: list[int], reason: str) -> int:
    """Close the given rows (still open) with reason; how many were closed."""
    from chat_ws.models import ClientSession

    return ClientSession.objects.filter(id__in=ids, closed_at__isnull=True).update(
        closed_at=timezone.now(), close_reason=reason[:REASON_MAX]
    )
