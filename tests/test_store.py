"""One suite, two backends: the in-memory store and the Redis store behave the same."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from chat_ws.exceptions import TooManyPending
from chat_ws.types import Question
from tests.seeding import add


def question(p_key: str, client_id: str = "c1", conversation: str = "process", **kw: Any) -> Question:
    now = kw.pop("asked_at", time.time())
    return Question(
        p_key=p_key,
        client_id=client_id,
        conversation=conversation,
        message={"dispatch-key": "iviewr-says", "text": f"question {p_key}", "p-key": p_key},
        asked_at=now,
        expires_at=kw.pop("expires_at", now + 60),
        server_id=kw.pop("server_id", "srv-a"),
        **kw,
    )


async def test_add_assigns_increasing_seq(store: Any) -> None:
    a = await add(store, question("p1"), max_pending=10)
    b = await add(store, question("p2"), max_pending=10)
    assert 0 < a.seq < b.seq
    assert [q.p_key for q in await store.client_questions("c1")] == ["p1", "p2"]


async def test_record_round_trips(store: Any) -> None:
    original = question("p1", on_disconnect="fail", extra={"k": [1, 2]})
    await add(store, original, max_pending=10)
    loaded = await store.get_question("p1")
    assert loaded is not None
    assert (loaded.p_key, loaded.client_id, loaded.conversation) == ("p1", "c1", "process")
    assert loaded.message["text"] == "question p1"
    assert loaded.on_disconnect == "fail"
    assert loaded.server_id == "srv-a"
    assert loaded.extra == {"k": [1, 2]}
    assert loaded.expires_at == pytest.approx(original.expires_at)


async def test_resolve_picks_most_recent_matching(store: Any) -> None:
    for key in ("p1", "p2", "p3"):
        await add(store, question(key), max_pending=10)
    resolved = await store.resolve("c1", ["p1", "p2", "nope"])
    assert resolved is not None and resolved.p_key == "p2"
    assert [q.p_key for q in await store.client_questions("c1")] == ["p1", "p3"]


async def test_resolve_is_exactly_once(store: Any) -> None:
    await add(store, question("p1"), max_pending=10)
    results = await asyncio.gather(*(store.resolve("c1", ["p1"]) for _ in range(20)))
    assert sum(r is not None for r in results) == 1
    assert await store.get_question("p1") is None


async def test_resolve_ignores_other_clients_keys(store: Any) -> None:
    await add(store, question("p1", client_id="victim"), max_pending=10)
    assert await store.resolve("attacker", ["p1"]) is None
    assert await store.get_question("p1") is not None


async def test_resolve_with_no_or_many_keys(store: Any) -> None:
    await add(store, question("p1"), max_pending=10)
    assert await store.resolve("c1", []) is None
    many = [f"k{i}" for i in range(5000)] + ["p1"]
    resolved = await store.resolve("c1", many)
    assert resolved is not None and resolved.p_key == "p1"


async def test_a_client_with_thousands_of_pending_questions(store: Any) -> None:
    """More than Lua's unpack() takes at once (about 8,000): the scripts read them in chunks."""
    await store.open_connection("many", "s", "ch", 100.0)
    n = 9000
    await asyncio.gather(*(store.ask_question(question(f"m{i}", client_id="many", asked_at=100.0 + i), max_pending=n) for i in range(n)))
    _, again = await store.connect_client("many", "s", "ch2", 101.0)
    assert len(again) == n and [q.seq for q in again] == sorted(q.seq for q in again)
    taken, _ = await store.forget_client("many")
    assert len(taken) == n and await store.pending() == []


async def test_take_removes_everywhere(store: Any) -> None:
    await add(store, question("p1"), max_pending=10)
    taken = await store.take("p1")
    assert taken is not None and taken.p_key == "p1"
    assert await store.take("p1") is None
    assert await store.pending() == []
    assert await store.pending("c1", "process") == []


async def test_max_pending(store: Any) -> None:
    for i in range(3):
        await add(store, question(f"p{i}"), max_pending=3)
    with pytest.raises(TooManyPending):
        await add(store, question("p9"), max_pending=3)
    assert len(await store.client_questions("c1")) == 3


async def test_pending_filters_by_client_and_conversation(store: Any) -> None:
    await add(store, question("a1", "a", "process"), max_pending=10)
    await add(store, question("a2", "a", "data"), max_pending=10)
    await add(store, question("b1", "b", "process"), max_pending=10)
    assert [q.p_key for q in await store.pending()] == ["a1", "a2", "b1"]
    assert [q.p_key for q in await store.pending("a")] == ["a1", "a2"]
    assert [q.p_key for q in await store.pending("a", "data")] == ["a2"]
    assert [q.p_key for q in await store.pending(conversation="process")] == ["a1", "b1"]


async def test_take_client(store: Any) -> None:
    await add(store, question("p1", on_disconnect="fail"), max_pending=10)
    await add(store, question("p2"), max_pending=10)
    await add(store, question("x1", client_id="other"), max_pending=10)
    fail_fast = await store.take_client("c1", only_fail_fast=True)
    assert [q.p_key for q in fail_fast] == ["p1"]
    rest = await store.take_client("c1")
    assert [q.p_key for q in rest] == ["p2"]
    assert [q.p_key for q in await store.pending()] == ["x1"]


async def test_expired_questions(store: Any) -> None:
    now = time.time()
    await add(store, question("old", asked_at=now - 100, expires_at=now - 1), max_pending=10)
    await add(store, question("new", asked_at=now, expires_at=now + 100), max_pending=10)
    expired = await store.expired_questions(now)
    assert [q.p_key for q in expired] == ["old"]
    assert [q.p_key for q in await store.pending()] == ["new"]


async def test_connect_client_returns_the_replaced_record_and_pending_questions(store: Any) -> None:
    assert await store.connect_client("c1", "srv-a", "chan-1", 100.0) == (None, [])
    await add(store, question("p1"), max_pending=10)
    await add(store, question("p2"), max_pending=10)
    await add(store, question("other", client_id="c2"), max_pending=10)
    previous, pending = await store.connect_client("c1", "srv-b", "chan-2", 101.0)
    assert previous is not None and previous.channel_name == "chan-1" and previous.server_id == "srv-a"
    assert [q.p_key for q in pending] == ["p1", "p2"]  # in the order asked, this client's only
    assert pending[0].message["text"] == "question p1"
    record = await store.connection("c1")
    assert record is not None and record.channel_name == "chan-2" and record.is_open


async def test_presence_open_replace_close(store: Any) -> None:
    assert await store.open_connection("c1", "srv-a", "chan-1", 100.0) is None
    previous = await store.open_connection("c1", "srv-b", "chan-2", 101.0)
    assert previous is not None and previous.channel_name == "chan-1" and previous.is_open
    assert not await store.close_connection("c1", "chan-1", 102.0)  # the old socket no longer owns it
    assert await store.close_connection("c1", "chan-2", 103.0)
    assert not await store.close_connection("c1", "chan-2", 104.0)
    record = await store.connection("c1")
    assert record is not None and record.closed_at == 103.0 and record.server_id == "srv-b"
    assert await store.closed_since(200.0) == ["c1"]
    assert await store.silent_since(200.0) == []


async def test_presence_touch_and_silence_index(store: Any) -> None:
    await store.open_connection("quiet", "s", "ch-q", 100.0)
    await store.open_connection("chatty", "s", "ch-c", 100.0)
    await store.mark_alive_sent("chatty", 150.0)
    assert await store.touch("chatty", 200.0)
    assert await store.silent_since(150.0) == ["quiet"]
    record = await store.connection("chatty")
    assert record is not None and record.last_seen == 200.0 and record.alive_sent_at is None
    await store.mark_alive_sent("quiet", 210.0)
    quiet = await store.connection("quiet")
    assert quiet is not None and quiet.alive_sent_at == 210.0
    assert not await store.touch("unknown", 1.0)


async def test_forget_client_removes_questions_and_presence(store: Any) -> None:
    await store.open_connection("c1", "s", "ch", 100.0)
    await add(store, question("p1"), max_pending=10)
    await add(store, question("p2"), max_pending=10)
    await add(store, question("x1", client_id="other"), max_pending=10)
    await store.claim("bind:c1", "session:a", 60, client_id="c1")
    await store.claim("bind:other", "session:b", 60, client_id="other")
    taken, channel_name = await store.forget_client("c1", claims=["bind:c1"])
    assert sorted(q.p_key for q in taken) == ["p1", "p2"]
    assert channel_name == "ch"  # the socket to close
    assert await store.claim("bind:c1", "session:new", 60, client_id="c1") == "session:new"  # released
    assert await store.claim("bind:other", "session:new", 60, client_id="other") == "session:b"  # untouched
    assert await store.connection("c1") is None
    assert [q.p_key for q in await store.pending()] == ["x1"]
    assert await store.forget_client("c1") == ([], None)


async def test_forget_client_names_no_channel_for_a_closed_socket(store: Any) -> None:
    await store.open_connection("c2", "s", "ch2", 100.0)
    assert await store.close_connection("c2", "ch2", 101.0)
    assert await store.forget_client("c2") == ([], None)  # in its grace period: nothing to close


async def test_locks_and_values(store: Any) -> None:
    assert await store.acquire_lock("sweep", "me", 5)
    assert not await store.acquire_lock("sweep", "you", 5)
    await store.release_lock("sweep", "you")
    assert not await store.acquire_lock("sweep", "you", 5)
    await store.release_lock("sweep", "me")
    assert await store.acquire_lock("sweep", "you", 5)
    await store.set_value("last-sweep", "123.5", None)
    assert await store.get_value("last-sweep") == "123.5"
    assert await store.get_value("missing") is None


async def test_publish_reaches_subscriber(store: Any) -> None:
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await store.subscribe("srv-x", received.put)
    await store.publish("srv-x", {"p_key": "p1", "outcome": "answered"})
    event = await asyncio.wait_for(received.get(), 5)
    assert event == {"p_key": "p1", "outcome": "answered"}


async def test_check(store: Any) -> None:
    assert await store.check()


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_redis_keys_use_prefix_and_have_ttls(store: Any, key_prefix: str) -> None:
    await add(store, question("p1"), max_pending=10)
    await store.open_connection("c1", "s", "ch", time.time())
    import re

    import redis.asyncio

    client: Any = redis.asyncio.Redis.from_url(store.url)
    try:
        ours = [k.decode() async for k in client.scan_iter(match=f"{key_prefix}:*")]
        assert ours, "the store wrote nothing under its prefix"
        without_ttl = {k for k in ours if await client.pttl(k) == -1}
    finally:
        await client.aclose()
    # the documented keys without a TTL: each bucket's question hash, counter and indexes
    documented = re.compile(re.escape(key_prefix) + r":\{\d+\}:(q|seq|idx:q|idx:seen|idx:closed)\Z")
    assert without_ttl and all(documented.match(k) for k in without_ttl), without_ttl
    assert all(re.match(re.escape(key_prefix) + r":\{\d+\}:", k) for k in ours), ours


async def test_claim_binds_to_the_first_owner(store: Any) -> None:
    assert await store.claim("bind:c1", "session:a", 60) == "session:a"
    assert await store.claim("bind:c1", "session:b", 60) == "session:a"
    assert await store.claim("bind:c1", "session:a", 60) == "session:a"
    assert await store.claim("bind:c2", "session:b", 60) == "session:b"


async def test_admit_socket_counts_and_forgets_stale(store: Any) -> None:
    assert await store.admit_socket("user:1", "ch1", limit=2, now=100.0, max_age=50)
    assert await store.admit_socket("user:1", "ch2", limit=2, now=101.0, max_age=50)
    assert not await store.admit_socket("user:1", "ch3", limit=2, now=102.0, max_age=50)
    assert await store.admit_socket("user:1", "ch2", limit=2, now=103.0, max_age=50)  # already counted
    await store.release_socket("user:1", "ch1")
    assert await store.admit_socket("user:1", "ch3", limit=2, now=104.0, max_age=50)
    assert await store.admit_socket("user:1", "ch4", limit=2, now=200.0, max_age=50)  # the others are stale


async def test_ask_question_needs_a_known_client(store: Any) -> None:
    assert await store.ask_question(question("p0"), max_pending=10) == ("none", None)
    await store.open_connection("c1", "s", "ch", 100.0)
    state, stored = await store.ask_question(question("p1"), max_pending=10)
    assert state == "open" and stored is not None and stored.seq > 0
    await store.close_connection("c1", "ch", 101.0)
    state, stored = await store.ask_question(question("p2"), max_pending=10)
    assert state == "closed" and stored is not None
    assert await store.ask_question(question("p3", on_disconnect="fail"), max_pending=10) == ("closed", None)
    with pytest.raises(TooManyPending):
        await store.ask_question(question("p4"), max_pending=2)
    assert [q.p_key for q in await store.pending()] == ["p1", "p2"]
