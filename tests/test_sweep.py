"""The sweep service, with both stores and channel layers, driven by an injected clock."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from channels.db import database_sync_to_async

from chat_ws import api, metrics, sessions
from chat_ws import sweep as sweeping
from chat_ws.exceptions import WS_4002_FORGOTTEN, AnswerTimeout, ClientGone
from chat_ws.models import ClientSession
from chat_ws.types import Question
from tests.comm import Comm
from tests.seeding import add, lose_presence

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 5.0  # seconds any awaited outcome may take
INACTIVE = 600 + 1  # past the default INACTIVITY_TIMEOUT
WINDOW = 30  # the default ALIVE_RESPONSE_TIMEOUT
GRACE = 60  # the default RECONNECT_GRACE


def ask(client_id: str, text: str = "What do you make?", **kw: Any) -> asyncio.Task[api.Answer]:
    return asyncio.create_task(api.ask(client_id, {"dispatch-key": "iviewr-says", "text": text}, **kw))


def evictions(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("chat_ws_sweep_evictions_total", {"reason": reason}) or 0.0


@database_sync_to_async
def _rows_of(client_id: str) -> list[ClientSession]:
    return list(ClientSession.objects.filter(client_id=client_id).order_by("pk"))


async def sessions_of(client_id: str) -> list[ClientSession]:
    await sessions.flush()
    return await _rows_of(client_id)


async def confirm(client: Comm) -> None:
    """Answer alive? and wait until the server has handled it (handlers run in order)."""
    await client.send({"dispatch-key": "alive-confirm"})
    await client.send({"dispatch-key": "ping", "ping-id": 1})
    await client.recv_until("ping-confirm")


async def snapshot(store: Any) -> tuple[Any, ...]:
    connections = sorted((vars(c) for c in await store.connections()), key=lambda c: c["client_id"])
    questions = [q.p_key for q in await store.pending()]
    return connections, questions, await store.get_value(sweeping.LAST_SWEEP)


# ---------------------------------------------------------------------- liveness
async def test_stale_client_gets_alive_confirms_and_survives(store: Any) -> None:
    client = await Comm().connect()
    t0 = time.time()
    assert (await sweeping.sweep(now=t0)).alive_sent == 0

    report = await sweeping.sweep(now=t0 + INACTIVE)
    assert report.alive_sent == 1
    assert (await client.recv())["dispatch-key"] == "alive?"
    record = await store.connection(client.client_id)
    assert record.alive_sent_at == t0 + INACTIVE

    await confirm(client)
    assert (await store.connection(client.client_id)).alive_sent_at is None
    later = await sweeping.sweep(now=t0 + INACTIVE + WINDOW + 1)
    assert later.inactive == 0
    assert await store.connection(client.client_id) is not None
    await client.recv_until("alive?")  # still silent on that clock, so it is asked again
    await client.send({"dispatch-key": "ping", "ping-id": 2})
    assert (await client.recv_until("ping-confirm"))["ping-id"] == 2
    await client.disconnect()


async def test_silent_client_is_forgotten_and_its_questions_fail(store: Any) -> None:
    client = await Comm().connect()
    task = ask(client.client_id)
    await client.recv()
    t0 = time.time()
    before = evictions(sweeping.INACTIVE)

    assert (await sweeping.sweep(now=t0 + INACTIVE)).alive_sent == 1
    await client.recv_until("alive?")
    waiting = await sweeping.sweep(now=t0 + INACTIVE + WINDOW - 1)
    assert (waiting.awaiting, waiting.inactive) == (1, 0)

    report = await sweeping.sweep(now=t0 + INACTIVE + WINDOW)
    assert (report.inactive, report.rejected) == (1, 1)
    assert await client.close_code() == WS_4002_FORGOTTEN
    with pytest.raises(ClientGone):
        await asyncio.wait_for(task, WAIT)
    assert await store.connection(client.client_id) is None
    assert await store.pending() == []
    rows = await sessions_of(client.client_id)
    assert [(r.is_open, r.close_reason) for r in rows] == [(False, "inactive")]
    assert evictions(sweeping.INACTIVE) == before + 1
    await client.disconnect()


async def test_grace_expiry_forgets_disconnected_client(store: Any) -> None:
    client = await Comm().connect()
    task = ask(client.client_id)
    await client.recv()
    await client.disconnect()
    record = await store.connection(client.client_id)
    assert record is not None and record.closed_at is not None
    before = evictions(sweeping.GRACE_EXPIRED)

    assert (await sweeping.sweep(now=record.closed_at + GRACE - 1)).grace_expired == 0
    assert not task.done()
    report = await sweeping.sweep(now=record.closed_at + GRACE + 1)
    assert (report.grace_expired, report.rejected) == (1, 1)
    with pytest.raises(ClientGone):
        await asyncio.wait_for(task, WAIT)
    assert await store.connection(client.client_id) is None
    assert evictions(sweeping.GRACE_EXPIRED) == before + 1


async def test_client_back_within_grace_is_kept(store: Any) -> None:
    client = await Comm().connect()
    task = ask(client.client_id)
    question = await client.recv()
    await client.disconnect()
    closed_at = (await store.connection(client.client_id)).closed_at
    again = await Comm(client.client_id).connect()
    assert (await again.recv())["p-key"] == question["p-key"]
    report = await sweeping.sweep(now=closed_at + GRACE + 1)
    assert report.grace_expired == 0
    await again.answer("Bicycles.")
    assert (await asyncio.wait_for(task, WAIT)).text == "Bicycles."
    await again.disconnect()


# ---------------------------------------------------------------------- orphans
async def test_expired_question_times_out_and_is_cleared(store: Any) -> None:
    client = await Comm().connect()
    task = ask(client.client_id, timeout=3600)
    question = await client.recv()
    report = await sweeping.sweep(now=time.time() + 3601)
    assert report.expired == 1
    with pytest.raises(AnswerTimeout):
        await asyncio.wait_for(task, WAIT)
    cleared = await client.recv_until("clear-promise-keys")
    assert [str(k) for k in cleared["promise-keys"]] == [str(question["p-key"])]
    assert await store.pending() == []
    await client.disconnect()


async def test_questions_of_a_client_without_presence_fail(store: Any) -> None:
    client = await Comm().connect()
    task = ask(client.client_id)
    await client.recv()
    await lose_presence(store, client.client_id)  # as when its record expired in Redis
    assert await store.orphaned_clients() == [client.client_id]
    report = await sweeping.sweep()
    assert report.orphaned == 1
    with pytest.raises(ClientGone, match=sweeping.UNKNOWN_CLIENT):
        await asyncio.wait_for(task, WAIT)
    assert await store.pending() == []
    await client.disconnect()


async def test_questions_of_a_present_client_are_not_orphans(store: Any) -> None:
    client = await Comm().connect()
    task = ask(client.client_id)
    await client.recv()
    assert await store.orphaned_clients() == []
    assert await store.take_orphaned(client.client_id) == []
    assert (await sweeping.sweep()).orphaned == 0
    assert not task.done()
    task.cancel()
    await client.disconnect()


@pytest.mark.parametrize("backend", ["redis"], indirect=True)  # only Redis records expire on their own
async def test_index_members_of_expired_records_are_pruned(store: Any, backend: str) -> None:
    client = await Comm().connect()
    cid = client.client_id
    seen = store.client_key(cid, "idx", "seen")
    await store._call("DEL", store.client_key(cid, "conn", cid))  # the record's TTL ran out
    assert await store._call("ZSCORE", seen, cid) is not None
    assert (await sweeping.sweep(dry_run=True)).pruned == 1
    assert (await sweeping.sweep()).pruned == 1
    assert await store._call("ZSCORE", seen, cid) is None
    assert (await sweeping.sweep()).pruned == 0
    await client.disconnect()


# ---------------------------------------------------------------------- dry run, write-back
async def test_dry_run_changes_nothing(store: Any) -> None:
    silent = await Comm().connect()
    marked = await Comm().connect()
    gone = await Comm().connect()
    t0 = time.time()
    await sweeping.check_alive([marked.client_id], now=t0 - WINDOW)
    await marked.recv_until("alive?")
    asks = [ask(marked.client_id), ask(gone.client_id, timeout=10)]
    await marked.recv()
    await gone.recv()
    await gone.disconnect()
    before = await snapshot(store)
    evicted = evictions(sweeping.INACTIVE), evictions(sweeping.GRACE_EXPIRED)

    report = await sweeping.sweep(now=t0 + INACTIVE, dry_run=True)
    assert report.dry_run
    assert (report.alive_sent, report.inactive, report.grace_expired) == (1, 1, 1)
    assert (report.expired, report.rejected) == (1, 2)
    assert report.summary().startswith("dry run")
    assert await snapshot(store) == before
    assert (evictions(sweeping.INACTIVE), evictions(sweeping.GRACE_EXPIRED)) == evicted
    assert await silent.nothing() and await marked.nothing()
    assert not any(t.done() for t in asks)
    for task in asks:
        task.cancel()
    await silent.disconnect()
    await marked.disconnect()


async def test_last_seen_is_written_back_in_bulk(store: Any) -> None:
    clients = [await Comm().connect() for _ in range(3)]
    for client in clients:
        await client.send({"dispatch-key": "ping", "ping-id": 1})
        await client.recv_until("ping-confirm")
    await sessions.flush()  # the rows are written behind the handshake, in batches
    report = await sweeping.sweep()
    assert report.written == 3
    for client in clients:
        record = await store.connection(client.client_id)
        (row,) = await sessions_of(client.client_id)
        assert row.last_seen_at.timestamp() == pytest.approx(record.last_seen, abs=1e-3)
    assert (await sweeping.sweep()).written == 0  # nothing heard since
    await clients[0].send({"dispatch-key": "ping", "ping-id": 2})
    await clients[0].recv_until("ping-confirm")
    assert (await sweeping.sweep()).written == 1
    for client in clients:
        await client.disconnect()


async def test_last_sweep_is_recorded(store: Any) -> None:
    assert await sweeping.last_sweep() is None
    report = await sweeping.sweep(now=1_900_000_000.0)
    last = await sweeping.last_sweep()
    assert last is not None and last["started_at"] == 1_900_000_000.0
    assert last["alive_sent"] == report.alive_sent


# ---------------------------------------------------------------------- concurrency
async def test_a_held_lock_skips_the_pass(store: Any) -> None:
    client = await Comm().connect()
    assert await store.acquire_lock(sweeping.LOCK, "someone-else", 30)
    report = await sweeping.sweep(now=time.time() + INACTIVE)
    assert report.skipped and report.alive_sent == 0
    assert "lock" in report.summary()
    assert await client.nothing()
    await store.release_lock(sweeping.LOCK, "someone-else")
    await client.disconnect()


async def _silent_past_window(store: Any) -> tuple[Comm, asyncio.Task[api.Answer], float]:
    client = await Comm().connect()
    task = ask(client.client_id)
    await client.recv()
    t0 = time.time()
    await sweeping.sweep(now=t0 + INACTIVE)
    await client.recv_until("alive?")
    return client, task, t0 + INACTIVE + WINDOW


async def test_two_sweeps_at_once_take_turns(store: Any) -> None:
    client, task, now = await _silent_past_window(store)
    # Another sweeper holds the lock: this pass stands aside and changes nothing.
    assert await store.acquire_lock(sweeping.LOCK, "another-sweeper", 30)
    report = await sweeping.sweep(now=now)
    assert report.skipped and report.inactive == 0
    assert not task.done()
    await store.release_lock(sweeping.LOCK, "another-sweeper")
    # Two passes started together: whether they overlap or not, the client is forgotten once.
    reports = await asyncio.gather(sweeping.sweep(now=now), sweeping.sweep(now=now))
    assert sum(r.inactive for r in reports) == 1
    with pytest.raises(ClientGone):
        await asyncio.wait_for(task, WAIT)
    await client.disconnect()


async def test_two_sweeps_past_a_lapsed_lock_forget_once(store: Any, monkeypatch: Any) -> None:
    client, task, now = await _silent_past_window(store)

    async def always(name: str, owner: str, ttl: float) -> bool:
        return True  # as if the first sweep's lock had lapsed

    monkeypatch.setattr(store, "acquire_lock", always)
    before = evictions(sweeping.INACTIVE)
    reports = await asyncio.gather(*(sweeping.sweep(now=now) for _ in range(3)))
    assert not any(r.skipped for r in reports)
    assert sum(r.inactive for r in reports) == 1
    assert sum(r.rejected for r in reports) == 1
    assert evictions(sweeping.INACTIVE) == before + 1
    with pytest.raises(ClientGone):
        await asyncio.wait_for(task, WAIT)
    assert await client.close_code() == WS_4002_FORGOTTEN
    await client.disconnect()


async def test_evict_claims_exactly_once(store: Any) -> None:
    await store.open_connection("c1", "srv", "chan-1", 100.0)
    await store.mark_alive_sent("c1", 200.0)
    assert not await store.evict("c1", alive_sent_at=199.0)
    results = await asyncio.gather(*(store.evict("c1", alive_sent_at=200.0) for _ in range(5)))
    assert sum(results) == 1
    assert await store.connection("c1") is None

    await store.open_connection("c2", "srv", "chan-2", 100.0)
    await store.close_connection("c2", "chan-2", 150.0)
    assert not await store.evict("c2", alive_sent_at=150.0)  # closed: no longer an alive? check
    assert await store.evict("c2", closed_at=150.0)
    with pytest.raises(ValueError):
        await store.evict("c3")


# ---------------------------------------------------------------------- on request
async def test_force_forgets_named_clients(store: Any) -> None:
    client = await Comm().connect()
    other = await Comm().connect()
    task = ask(client.client_id)
    await client.recv()
    before = evictions(sweeping.FORCED)
    report = await sweeping.force([client.client_id, "never-seen"])
    assert (report.forced, report.rejected) == (1, 1)
    assert await client.close_code() == WS_4002_FORGOTTEN
    with pytest.raises(ClientGone):
        await asyncio.wait_for(task, WAIT)
    assert await store.connection(other.client_id) is not None
    assert evictions(sweeping.FORCED) == before + 1
    await client.disconnect()
    await other.disconnect()


async def test_force_all_forgets_everyone_and_every_question(store: Any) -> None:
    clients = [await Comm().connect() for _ in range(2)]
    tasks = [ask(c.client_id) for c in clients]
    for client in clients:
        await client.recv()
    report = await sweeping.force()
    assert (report.forced, report.rejected) == (2, 2)
    for client in clients:
        assert await client.close_code() == WS_4002_FORGOTTEN
        await client.disconnect()
    for task in tasks:
        with pytest.raises(ClientGone):
            await asyncio.wait_for(task, WAIT)
    assert await store.connections() == [] and await store.pending() == []


async def test_check_alive_marks_and_asks(store: Any) -> None:
    client = await Comm().connect()
    assert await sweeping.check_alive([client.client_id, "never-seen"], now=123.0) == 1
    assert (await client.recv())["dispatch-key"] == "alive?"
    assert (await store.connection(client.client_id)).alive_sent_at == 123.0
    await client.disconnect()


# ---------------------------------------------------------------------- store support
async def test_store_stats_and_seen_since(store: Any) -> None:
    await store.open_connection("a", "srv", "chan-a", 100.0)
    await store.open_connection("b", "srv", "chan-b", 200.0)
    await store.close_connection("b", "chan-b", 250.0)
    await add(store, Question("p1", "a", "process", {"dispatch-key": "iviewr-says"}, asked_at=50.0, expires_at=9e9))
    stats = await store.stats()
    assert (stats.open_connections, stats.closed_connections, stats.questions) == (1, 1, 1)
    assert stats.oldest_asked_at == pytest.approx(50.0)
    assert [c.client_id for c in await store.seen_since(0.0)] == ["a", "b"]
    assert [c.client_id for c in await store.seen_since(150.0)] == ["b"]
    assert [c.client_id for c in await store.get_connections(["b", "zz", "a"])] == ["b", "a"]
    assert await store.count_expired(9e9) == 1 and await store.count_expired(100.0) == 0
    await store.set_value("x", "1", None)
    await store.delete_value("x")
    assert await store.get_value("x") is None


def test_report_arithmetic_and_summary() -> None:
    a = sweeping.SweepReport(alive_sent=1, inactive=2, rejected=3)
    b = sweeping.SweepReport(alive_sent=1, expired=1, skipped=True)
    total = a + b
    assert (total.alive_sent, total.inactive, total.expired, total.evicted) == (2, 2, 1, 2)
    assert not total.skipped
    assert total.summary() == "swept: 2 alive sent, 2 inactive, 3 rejected, 1 expired"
    assert sweeping.SweepReport().summary() == "swept: nothing to do"


async def test_an_unanswered_check_from_the_admin_is_due_after_the_window(store: Any) -> None:
    client = await Comm().connect()
    t0 = time.time()
    await sweeping.check_alive([client.client_id], now=t0)
    await client.recv_until("alive?")
    assert (await sweeping.sweep(now=t0 + WINDOW - 1)).inactive == 0
    report = await sweeping.sweep(now=t0 + WINDOW)
    assert report.inactive == 1  # silent since the check, though not for INACTIVITY_TIMEOUT
    assert await client.close_code() == WS_4002_FORGOTTEN
    await client.disconnect()


async def test_a_client_that_pings_after_a_check_is_kept(store: Any) -> None:
    client = await Comm().connect()
    t0 = time.time()
    await sweeping.check_alive([client.client_id], now=t0)
    await client.recv_until("alive?")
    await client.send({"dispatch-key": "ping", "ping-id": 9})
    await client.recv_until("ping-confirm")
    report = await sweeping.sweep(now=t0 + WINDOW + 1)
    assert (report.inactive, report.awaiting, report.alive_sent) == (0, 0, 0)
    assert await store.connection(client.client_id) is not None
    await client.disconnect()


async def test_session_rows_whose_process_died_are_closed_as_lost(store: Any) -> None:
    """A process killed with a close still queued leaves its row open; the sweep closes it once no
    presence record names its connection, and leaves live connections' rows alone."""
    live = await Comm().connect()
    await sessions.flush()
    dead = await database_sync_to_async(ClientSession.objects.create)(
        client_id="killed-with-its-process", channel_name="specific.gone!x", server_id="a-dead-process"
    )
    replaced = await database_sync_to_async(ClientSession.objects.create)(
        client_id=live.client_id, channel_name="specific.older!y", server_id="a-dead-process"
    )
    report = await sweeping.sweep()
    assert report.sessions_lost == 2
    rows = {r.id: r for r in await database_sync_to_async(list)(ClientSession.objects.all())}
    assert rows[dead.id].closed_at is not None and rows[dead.id].close_reason == "lost"
    assert rows[replaced.id].close_reason == "lost"
    [current] = [r for r in rows.values() if r.client_id == live.client_id and r.id != replaced.id]
    assert current.closed_at is None, "a live connection's row was closed"
    assert (await sweeping.sweep()).sessions_lost == 0
    await live.disconnect()
