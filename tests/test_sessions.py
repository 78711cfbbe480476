"""ClientSession rows written in batches: the order of opens and closes is kept."""

from __future__ import annotations

from datetime import timedelta

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
