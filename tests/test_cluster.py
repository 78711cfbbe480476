"""chat_ws.store.cluster.ClusterConnection on a real 3-master Redis Cluster: routing by slot, with
redis-py's RedisCluster as the oracle; MOVED and ASK followed while a slot really migrates; scripts
loaded on a master that does not know them; the store's keys spread over every master."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from chat_ws.store.cluster import ClusterConnection, slot_of
from chat_ws.store.resp import Script
from devtools.redis_cluster import Cluster
from tests.cluster_util import redis_cluster  # noqa: F401 (session fixture)

pytestmark = pytest.mark.redis

WAIT = 10.0


@pytest.fixture
async def conn(redis_cluster: Cluster) -> AsyncIterator[ClusterConnection]:
    found = ClusterConnection(redis_cluster.url)
    yield found
    await found.close()


@pytest.fixture
def oracle(redis_cluster: Cluster) -> Iterator[Any]:
    client: Any = RedisCluster.from_url(redis_cluster.url)
    yield client
    client.close()


def node_id(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        return str(client.execute_command("CLUSTER MYID").decode())
    finally:
        client.close()


def cmd(url: str, *args: Any) -> Any:
    client = redis.Redis.from_url(url)
    try:
        return client.execute_command(*args)
    finally:
        client.close()


class Migration:
    """One slot moved from its master to another, step by step, as redis-cli --cluster reshard does."""

    def __init__(self, cluster: Cluster, slot: int) -> None:
        self.cluster = cluster
        self.slot = slot
        self.source = cluster.master_for_slot(slot)
        self.target = next(m for m in cluster.masters() if m != self.source)

    def begin(self) -> None:
        cmd(self.target.url, "CLUSTER", "SETSLOT", self.slot, "IMPORTING", node_id(self.source.url))
        cmd(self.source.url, "CLUSTER", "SETSLOT", self.slot, "MIGRATING", node_id(self.target.url))

    def move_keys(self) -> None:
        while keys := cmd(self.source.url, "CLUSTER", "GETKEYSINSLOT", self.slot, 100):
            cmd(self.source.url, "MIGRATE", self.target.host, self.target.port, "", 0, 5000, "KEYS", *keys)

    def finish(self, owner: Any = None) -> None:
        owner_id = node_id((owner or self.target).url)
        for master in self.cluster.masters():
            cmd(master.url, "CLUSTER", "SETSLOT", self.slot, "NODE", owner_id)

    def back(self) -> None:
        """Move the slot home again (the cluster is shared by the session)."""
        back = Migration(self.cluster, self.slot)
        back.target = self.source
        back.begin()
        back.move_keys()
        back.finish()


def key_on_slot_of(tag: str) -> tuple[str, int]:
    key = f"chat_ws_test:{{{tag}}}:k"
    return key, slot_of(key)


async def test_routes_each_key_to_the_master_of_its_slot(conn: ClusterConnection, oracle: Any, redis_cluster: Cluster) -> None:
    tag = secrets.token_hex(4)
    keys = [f"chat_ws_test:{tag}:{n}" for n in range(300)]
    await asyncio.gather(*(conn.call("SET", k, str(n)) for n, k in enumerate(keys)))
    assert [v.decode() for v in oracle.mget_nonatomic(keys)] == [str(n) for n in range(len(keys))]
    masters = {m.port: m for m in redis_cluster.masters()}
    assert sorted(int(n.rpartition(":")[2]) for n in await conn.masters()) == sorted(masters)
    for k in keys[:30]:
        assert int((await conn.node_for(k)).rpartition(":")[2]) == redis_cluster.master_for_slot(slot_of(k)).port
    oracle.delete(*keys)


async def test_follows_moved_after_a_slot_moves(conn: ClusterConnection, redis_cluster: Cluster) -> None:
    key, slot = key_on_slot_of(secrets.token_hex(4))
    await conn.call("SET", key, "before")
    refreshes = conn.refreshes
    move = Migration(redis_cluster, slot)
    move.begin()
    move.move_keys()
    move.finish()
    try:
        assert await conn.call("GET", key) == b"before"  # MOVED, followed to the new owner
        await conn.call("SET", key, "after")
        assert cmd(move.target.url, "GET", key) == b"after"
        assert int((await conn.node_for(key)).rpartition(":")[2]) == move.target.port
        await conn.refresh()
        assert conn.refreshes > refreshes
    finally:
        move.back()
        cmd(move.source.url, "DEL", key)


async def test_follows_ask_while_a_slot_migrates_and_loads_scripts_there(
    conn: ClusterConnection, redis_cluster: Cluster
) -> None:
    key, slot = key_on_slot_of(secrets.token_hex(4))
    other = key.replace(":k", ":other")  # same slot, stays behind on the source until moved
    script = Script(f"-- {secrets.token_hex(8)}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    await conn.call("SET", key, "1")
    await conn.call("SET", other, "1")
    move = Migration(redis_cluster, slot)
    move.begin()
    try:
        cmd(move.source.url, "MIGRATE", move.target.host, move.target.port, key, 0, 5000)  # only key moves
        # the source answers ASK for key: the call goes to the target with ASKING, where the script
        # is unknown (NOSCRIPT), is loaded, and runs
        assert await conn.evalsha(script, [key], [5]) == 6
        assert await conn.call("GET", other) == b"1"  # still served by the source
        assert cmd(move.source.url, "CLUSTER", "COUNTKEYSINSLOT", slot) == 1  # only other is left there
        assert await conn.call("GET", key) == b"6"
    finally:
        move.move_keys()
        move.finish()
        move.back()
        cmd(move.source.url, "DEL", key, other)


async def test_a_dropped_connection_fails_its_calls_then_reconnects(conn: ClusterConnection) -> None:
    key = f"chat_ws_test:{secrets.token_hex(4)}"
    await conn.call("SET", key, "1")
    connects = conn.connects
    conn.abort()
    assert await conn.call("GET", key) == b"1"  # the next call connects again
    assert conn.connects > connects
    await conn.call("DEL", key)


async def test_the_store_keys_spread_over_every_master(redis_cluster: Cluster, settings: Any) -> None:
    """Many clients' records land on all three masters, each bucket in one slot."""
    from chat_ws.store.redis import RedisStore
    from chat_ws.conf import DEFAULTS

    prefix = f"chat_ws_test:{secrets.token_hex(4)}"
    store = RedisStore({**DEFAULTS, "REDIS_URL": redis_cluster.url, "REDIS_CLUSTER": True, "KEY_PREFIX": prefix})
    try:
        ids = [f"spread-{n}" for n in range(300)]
        await asyncio.gather(*(store.open_connection(c, "srv", f"ch-{c}", 100.0) for c in ids))
        per_master = {}
        for master in redis_cluster.masters():
            client = redis.Redis.from_url(master.url)
            per_master[master.port] = [k.decode() for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
            client.close()
            for key in per_master[master.port]:
                assert master.owns(slot_of(key))
        assert all(len(keys) > 50 for keys in per_master.values()), {p: len(k) for p, k in per_master.items()}
        assert sum(len(k) for k in per_master.values()) == len(ids) + len({store.bucket(c) for c in ids})
        assert len(await store.connections()) == len(ids)
        for c in ids:
            await store.forget_client(c)
        assert await store.stats() == type(await store.stats())(0, 0, 0, None)
    finally:
        await store.close()


async def test_settlement_notices_follow_their_channel_to_another_master(redis_cluster: Cluster) -> None:
    """Sharded pub/sub: when the slot of a process's notice channel moves, the old master ends the
    subscription and the listener subscribes on the new one."""
    from chat_ws.conf import DEFAULTS
    from chat_ws.store.redis import RedisStore

    conf = {**DEFAULTS, "REDIS_URL": redis_cluster.url, "REDIS_CLUSTER": True, "KEY_PREFIX": f"chat_ws_test:{secrets.token_hex(4)}"}
    store, sender = RedisStore(conf), RedisStore(conf)  # the listening process, and another that answers
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await store.subscribe("srv-moving", received.put)
    assert await sender.publish("srv-moving", {"n": 1}) == 1
    assert await asyncio.wait_for(received.get(), WAIT) == {"n": 1}
    move = Migration(redis_cluster, slot_of(store.key("srv", "srv-moving")))
    move.begin()
    move.finish()  # a channel holds no keys: nothing to migrate
    try:
        async with asyncio.timeout(WAIT):  # each try is one round trip: published to nobody, or to it
            while await sender.publish("srv-moving", {"n": 2}) == 0:
                pass
        events = [await asyncio.wait_for(received.get(), WAIT) for _ in range(2)]
        assert events == [{"event": "resubscribed"}, {"n": 2}]
    finally:
        move.back()
        await store.close()
        await sender.close()


def tryagain_errors(cluster: Cluster) -> int:
    """TRYAGAIN replies the masters have sent so far (INFO errorstats)."""
    total = 0
    for master in cluster.masters():
        client = redis.Redis.from_url(master.url)
        try:
            total += int(client.info("errorstats").get("errorstat_TRYAGAIN", {}).get("count", 0))
        finally:
            client.close()
    return total


async def test_store_scripts_wait_out_a_bucket_in_migration(redis_cluster: Cluster) -> None:
    """A bucket's slot migrates while a client's keys are split between the two masters: its
    multi-key scripts get TRYAGAIN, are retried, and succeed once the migration completes."""
    from chat_ws.conf import DEFAULTS
    from chat_ws.store.redis import RedisStore
    from chat_ws.types import Question

    prefix = f"chat_ws_test:{secrets.token_hex(4)}"
    store = RedisStore({**DEFAULTS, "REDIS_URL": redis_cluster.url, "REDIS_CLUSTER": True, "KEY_PREFIX": prefix})
    client_id = "migrating-client"
    await store.open_connection(client_id, "srv", "ch", 100.0)
    conn_key = store.client_key(client_id, "conn", client_id)
    move = Migration(redis_cluster, slot_of(conn_key))
    before = tryagain_errors(redis_cluster)
    move.begin()
    try:
        cmd(move.source.url, "MIGRATE", move.target.host, move.target.port, conn_key, 0, 5000)  # split
        now = 1000.0
        question = Question(
            p_key="p-migrating", client_id=client_id, conversation="c",
            message={"dispatch-key": "iviewr-says", "text": "?", "p-key": "p-migrating"},
            asked_at=now, expires_at=now + 60, server_id="srv",
        )
        task = asyncio.create_task(store.ask_question(question, max_pending=10))
        # a migration takes its time: the script is retried past a few rounds (about 2.5 s here)
        async with asyncio.timeout(WAIT):  # each look asks the masters once, off this loop
            while await asyncio.to_thread(tryagain_errors, redis_cluster) < before + 8:
                pass
        assert not task.done()
        move.move_keys()
        move.finish()
        state, stored = await asyncio.wait_for(task, WAIT)
        assert state == "open" and stored is not None
        assert [q.p_key for q in await store.client_questions(client_id)] == ["p-migrating"]
        assert await store.resolve(client_id, ["p-migrating"]) is not None
    finally:
        await store.forget_client(client_id)
        move.back()
        await store.close()


async def test_with_a_master_down_the_sweep_and_health_serve_the_others(settings: Any) -> None:
    """A private cluster loses one master (SIGKILL). Before the cluster notices (node timeout),
    the sweep still fails the expired questions of the buckets on the other masters, and health
    reports the store degraded, naming the missing master, without declaring the process unhealthy."""
    from chat_ws import store as store_module
    from chat_ws import sweep as sweeping
    from chat_ws.health import health
    from chat_ws.types import Question
    from devtools.redis_cluster import start_cluster
    from tests.cluster_util import require_cluster_tools

    require_cluster_tools()
    cluster = start_cluster(3)
    try:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
        settings.CHAT_WS = {"REDIS_URL": cluster.url, "REDIS_CLUSTER": True, "KEY_PREFIX": "down"}
        store_module.reset_store()
        store = store_module.get_store()
        # the victim holds none of the keys a pass needs besides the buckets (lock, values, notices)
        shared = [store.key("lock", sweeping.LOCK), store.key("srv", "srv-a"),
                  *(store.key("val", n) for n in (sweeping.LAST_SWEEP, sweeping.SEEN_MARK, "sweep:heartbeat"))]
        victim = next(m for m in cluster.masters() if not any(m.owns(slot_of(k)) for k in shared))
        now = 1000.0
        clients = [f"client-{n}" for n in range(60)]
        for client_id in clients:
            await store.open_connection(client_id, "srv-a", f"ch-{client_id}", now)
            p_key = f"p-{client_id}"
            await store.ask_question(
                Question(p_key=p_key, client_id=client_id, conversation="c", asked_at=now, expires_at=now + 1,
                         message={"dispatch-key": "iviewr-says", "text": "?", "p-key": p_key}, server_id="srv-a"),
                max_pending=10,
            )
        on_victim = [c for c in clients if victim.owns(slot_of(store.client_key(c, "q")))]
        assert 0 < len(on_victim) < len(clients)
        proc = next(p for p in cluster.procs if str(victim.port) in map(str, p.args))  # its own server
        proc.kill()
        proc.wait(10)

        report = await sweeping.sweep(now=now + 100)
        assert report.expired == len(clients) - len(on_victim)

        verdict = await health(now=now + 100)
        assert verdict.healthy and verdict.store and verdict.store_degraded
        assert any(str(victim.port) in p for p in verdict.problems), verdict.problems
        down = [n for n in verdict.store_nodes or [] if n["error"]]
        assert [n["node"] for n in down] == [f"{victim.host}:{victim.port}"]
        await store.close()
    finally:
        store_module.reset_store()
        cluster.stop()
