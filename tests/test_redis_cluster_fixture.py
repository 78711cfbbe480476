"""The session's Redis Cluster and layer hosts (tests/cluster_util.py, devtools/redis_cluster.py):
three masters owning every slot between them, keys on the master of their slot, and the
command line's exports and teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from devtools.processes import accepts
from devtools.redis_cluster import SLOTS, Cluster, Standalones, start_standalone
from tests.cluster_util import layer_hosts, redis_cluster, require_cluster_tools  # noqa: F401 (fixtures)

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent
CLI_TIMEOUT = 60.0  # seconds `up` may take to print its exports, and to exit after a signal


def client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)


def test_three_masters_own_all_slots_between_them(redis_cluster: Cluster) -> None:  # noqa: F811
    masters = redis_cluster.masters()
    assert sorted(master.port for master in masters) == sorted(redis_cluster.ports)
    assert len(masters) == 3
    assert all(master.slot_count > 0 for master in masters)
    ranges = sorted(owned for master in masters for owned in master.slots)
    assert ranges[0][0] == 0 and ranges[-1][1] == SLOTS - 1
    for (_, last), (first, _) in zip(ranges, ranges[1:]):
        assert first == last + 1, "slots missing or owned twice"
    assert sum(master.slot_count for master in masters) == SLOTS

    # redis-py's own view of the cluster as the oracle: same masters, same owners
    with RedisCluster.from_url(redis_cluster.url) as cluster:
        assert sorted(node.port for node in cluster.get_primaries()) == sorted(redis_cluster.ports)
        for master in masters:
            for first, last in master.slots:
                for slot in (first, last):
                    assert cluster.nodes_manager.get_node_from_slot(slot).port == master.port
                    assert redis_cluster.master_for_slot(slot) == master
    for port in redis_cluster.ports:  # every node tells the same
        with client(port) as node:
            info = node.cluster("INFO")
        assert info["cluster_state"] == "ok" and int(info["cluster_slots_assigned"]) == SLOTS


def test_a_hash_tagged_key_lands_on_the_master_owning_its_slot(redis_cluster: Cluster) -> None:  # noqa: F811
    run = uuid.uuid4().hex[:12]
    masters = redis_cluster.masters()
    written: dict[int, str] = {}  # master port -> a key it holds
    with RedisCluster.from_url(redis_cluster.url, decode_responses=True) as cluster:
        for n in range(1000):  # until every master holds one: slots spread over all three
            tag = f"chat_ws_test:{run}:{n}"
            key, sibling = f"{{{tag}}}:question", f"{{{tag}}}:presence"
            slot = key_slot(key.encode())
            assert slot == key_slot(sibling.encode()) == key_slot(tag.encode())  # only the tag is hashed
            owner = redis_cluster.master_for_slot(slot)
            if owner.port in written:
                continue
            assert cluster.set(key, n) and cluster.set(sibling, n)
            with client(owner.port) as node:
                assert int(node.cluster("KEYSLOT", key)) == slot
                assert node.get(key) == str(n)  # the owner holds it
                assert node.get(sibling) == str(n)  # and its sibling with the same tag
            for other in masters:
                if other.port != owner.port:
                    with client(other.port) as node, pytest.raises(redis.exceptions.MovedError) as moved:
                        node.get(key)
                    assert str(moved.value) == f"{slot} 127.0.0.1:{owner.port}"
            written[owner.port] = key
            if len(written) == len(masters):
                break
        assert sorted(written) == sorted(redis_cluster.ports)
        for key in written.values():
            cluster.delete(key, key.replace(":question", ":presence"))


def test_both_layer_hosts_answer_ping(layer_hosts: Standalones) -> None:  # noqa: F811
    assert len(layer_hosts.urls) == 2 and len(set(layer_hosts.ports)) == 2
    for url in layer_hosts.urls:
        server = redis.Redis.from_url(url, socket_timeout=5)
        assert server.ping()
        assert server.info("cluster")["cluster_enabled"] == 0  # plain servers, not cluster nodes
        assert server.config_get("save")["save"] == "" and server.config_get("appendonly")["appendonly"] == "no"
        server.close()


def test_stop_ends_the_servers_and_removes_their_directory() -> None:
    require_cluster_tools(("redis-server",))
    with start_standalone(1) as servers:
        (port,) = servers.ports
        proc = servers.procs[0]
        assert accepts(port) and servers.dir.is_dir()
        assert os.getpgid(proc.pid) == proc.pid  # a process group of its own
    assert proc.poll() == 0  # SIGTERM: a clean exit
    assert not accepts(port)
    assert not servers.dir.exists()


@pytest.mark.integration
def test_up_prints_the_exports_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    require_cluster_tools()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.redis_cluster", "up", "--base-dir", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=open(tmp_path / "up.log", "w"), text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        with ThreadPoolExecutor(1) as pool:
            lines = [pool.submit(proc.stdout.readline).result(CLI_TIMEOUT) for _ in range(3)]
        env = dict(line.removeprefix("export ").rstrip("\n").split("=", 1) for line in lines)
        assert set(env) == {"REDIS_URL", "REDIS_CLUSTER", "CHANNEL_LAYER_URLS"}, lines
        assert env["REDIS_CLUSTER"] == "1"
        with RedisCluster.from_url(env["REDIS_URL"]) as cluster:
            assert len(cluster.get_primaries()) == 3
            ports = [node.port for node in cluster.get_primaries()]
        layer_urls = env["CHANNEL_LAYER_URLS"].split(",")
        assert len(layer_urls) == 2
        for url in layer_urls:
            assert redis.Redis.from_url(url, socket_timeout=5).ping()
            ports.append(int(url.rsplit(":", 1)[1]))

        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=CLI_TIMEOUT) == 0, (tmp_path / "up.log").read_text()
        assert not [port for port in ports if accepts(port)], "a server outlived `up`"
        assert list(tmp_path.iterdir()) == [tmp_path / "up.log"]  # the servers' directories are gone
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its own group: the servers lead groups of their own
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
