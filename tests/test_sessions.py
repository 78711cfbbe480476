"""ClientSession rows written in batches: the order of opens and closes is kept."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from chat_ws.models import ClientSession
from chat_ws.sessions import _Close, _Open, _write

pytestmark = pytest.mark.django_db(transaction=True)


def opened(client_id: str, channel_name: str) -> _Open:
    return _Open({"client_id": client_id, "channel_name": channel_name, "server_id": "srv"})


def test_a_batch_applies_opens_and_closes_in_order() -> None:
    t0 = timezone.now().replace(microsecond=0)
    _write(
        [
            opened("a", "ch-a1"),
            opened("b", "ch-b1"),
            _Close("channel_name", "ch-a1", "first", t0),
            _Close("channel_name", "ch-a1", "second", t0 + timedelta(seconds=1)),  # finds it closed
            _Close("channel_name", "ch-unknown", "nobody", t0),
            opened("a", "ch-a2"),  # a reconnect: a new row, open
            _Close("client_id", "b", "forgotten", t0 + timedelta(seconds=2)),
            _Close("channel_name", "ch-b1", "too-late", t0 + timedelta(seconds=3)),
        ]
    )
    rows = {r.channel_name: r for r in ClientSession.objects.all()}
    assert set(rows) == {"ch-a1", "ch-b1", "ch-a2"}
    assert (rows["ch-a1"].close_reason, rows["ch-a1"].closed_at) == ("first", t0)
    assert (rows["ch-b1"].close_reason, rows["ch-b1"].closed_at) == ("forgotten", t0 + timedelta(seconds=2))
    assert rows["ch-a2"].is_open


def test_a_close_reason_is_cut_to_its_column() -> None:
    _write([opened("c", "ch-c"), _Close("channel_name", "ch-c", "x" * 500)])
    assert ClientSession.objects.get(channel_name="ch-c").close_reason == "x" * 64


class _Deadlock(Exception):
    sqlstate = "40P01"  # PostgreSQL's deadlock_detected, as psycopg raises it


def _conflict_once(monkeypatch: pytest.MonkeyPatch, target: str) -> list[int]:
    """Make the first statement of kind ``target`` fail as PostgreSQL fails a deadlock victim."""
    from django.db import OperationalError
    from django.db.backends import utils

    calls: list[int] = []
    execute = utils.CursorWrapper.execute
    executemany = utils.CursorWrapper.executemany

    def fail_first(sql: str) -> None:
        if sql.lstrip().upper().startswith(target):
            calls.append(1)
            if len(calls) == 1:
                raise OperationalError("deadlock detected") from _Deadlock()

    def patched_execute(self: Any, sql: str, params: Any = None) -> Any:
        fail_first(sql)
        return execute(self, sql, params)

    def patched_executemany(self: Any, sql: str, param_list: Any) -> Any:
        fail_first(sql)
        return executemany(self, sql, param_list)

    monkeypatch.setattr(utils.CursorWrapper, "execute", patched_execute)
    monkeypatch.setattr(utils.CursorWrapper, "executemany", patched_executemany)
    return calls


def test_a_batch_that_meets_a_deadlock_is_written_again_once(monkeypatch: pytest.MonkeyPatch) -> None:
    _write([opened("d", "ch-d0")])
    calls = _conflict_once(monkeypatch, "UPDATE")
    _write([opened("d", "ch-d1"), _Close("channel_name", "ch-d0", "gone")])  # its first try is rolled back
    assert len(calls) == 2
    rows = {r.channel_name: r for r in ClientSession.objects.filter(client_id="d")}
    assert set(rows) == {"ch-d0", "ch-d1"}  # the open of ch-d1 once, not twice
    assert rows["ch-d0"].close_reason == "gone"


def test_closing_lost_rows_is_done_again_after_a_deadlock(monkeypatch: pytest.MonkeyPatch) -> None:
    from asgiref.sync import async_to_sync

    from chat_ws.sessions import close_rows

    _write([opened("e", "ch-e")])
    row = ClientSession.objects.get(channel_name="ch-e")
    calls = _conflict_once(monkeypatch, "UPDATE")
    assert async_to_sync(close_rows)([row.id], "lost") == 1
    assert len(calls) == 2


def test_other_database_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import OperationalError
    from django.db.backends import utils

    calls: list[int] = []

    def broken(self: Any, sql: str, params: Any = None) -> Any:
        calls.append(1)
        raise OperationalError("disk I/O error")

    monkeypatch.setattr(utils.CursorWrapper, "execute", broken)
    with pytest.raises(OperationalError):
        _write([opened("f", "ch-f")])
    assert len(calls) == 1
