"""CPU per Lua script call (EVALSHA): redis-py's asyncio client against chat_ws's pipelined connection.

``.venv/bin/python bench/bench_redis.py [--calls 20000] [--clients 50] [--rounds 3]`` from the
checkout. Uses database 14 of the Redis at ``--redis`` and keys under ``bench-redis:``, deleted
at the end. Each round runs both clients in turn (order alternating) on uvloop with C concurrent
callers and prints calls/s, this process's CPU per call and the Redis server's CPU per call; the
last lines are medians over rounds. This is the measurement behind chat_ws/store/resp.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCRIPT = "redis.call('SET', KEYS[1], ARGV[1], 'PX', 60000); return redis.call('GET', KEYS[1])"
PREFIX = "bench-redis:"


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def redis_cpu(url: str) -> float:
    """The Redis server's CPU seconds (INFO cpu), whatever else uses it."""
    import redis

    info: Any = redis.Redis.from_url(url).info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def drive(call: Any, calls: int, clients: int) -> tuple[float, float]:
    """C concurrent callers making calls // C calls each of ``call(i)``: wall seconds, CPU seconds."""

    async def caller(i: int) -> None:
        for _ in range(calls // clients):
            await call(i)

    began, used = time.perf_counter(), cpu()
    await asyncio.gather(*(caller(i) for i in range(clients)))
    return time.perf_counter() - began, cpu() - used


async def _redis_py(client: Any, calls: int, clients: int) -> tuple[float, float]:
    script = client.register_script(SCRIPT)
    await asyncio.gather(*(script(keys=[f"{PREFIX}{i}"], args=["v"]) for i in range(clients)))  # warm
    try:
        return await drive(lambda i: script(keys=[f"{PREFIX}{i}"], args=["v" * 200]), calls, clients)
    finally:
        await client.aclose()


async def _chat_ws(connection: Any, calls: int, clients: int) -> tuple[float, float]:
    from chat_ws.store.resp import Script

    script = Script(SCRIPT)
    await asyncio.gather(*(connection.evalsha(script, [f"{PREFIX}{i}"], ["v"]) for i in range(clients)))  # warm
    try:
        return await drive(lambda i: connection.evalsha(script, [f"{PREFIX}{i}"], ["v" * 200]), calls, clients)
    finally:
        await connection.close()


async def run_redis_py(url: str, calls: int, clients: int) -> tuple[float, float]:
    import redis.asyncio as aioredis

    return await _redis_py(aioredis.Redis.from_url(url, max_connections=clients * 2), calls, clients)


async def run_chat_ws(url: str, calls: int, clients: int) -> tuple[float, float]:
    from chat_ws.store.resp import RespConnection

    return await _chat_ws(RespConnection(url), calls, clients)


async def run_redis_py_cluster(url: str, calls: int, clients: int) -> tuple[float, float]:
    from redis.asyncio.cluster import RedisCluster

    return await _redis_py(RedisCluster.from_url(url), calls, clients)


async def run_chat_ws_cluster(url: str, calls: int, clients: int) -> tuple[float, float]:
    from chat_ws.store.cluster import ClusterConnection

    return await _chat_ws(ClusterConnection(url), calls, clients)


CLIENTS = {"redis-py (asyncio, hiredis)": run_redis_py, "chat_ws.store.resp": run_chat_ws}
CLUSTER_CLIENTS = {
    "redis-py RedisCluster": run_redis_py_cluster,
    "chat_ws.store.cluster": run_chat_ws_cluster,
}


def main(argv: list[str] | None = None) -> int:
    import uvloop

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--cluster", action="store_true",
        help="also run redis-py's RedisCluster and chat_ws's cluster connection on a local 3-master cluster",
    )
    args = p.parse_args(argv)
    clients = dict(CLIENTS)
    urls = {name: [args.redis] for name in CLIENTS}
    cluster = None
    if args.cluster:
        from devtools.redis_cluster import start_cluster

        cluster = start_cluster(3)
        clients.update(CLUSTER_CLIENTS)
        urls.update({name: list(cluster.urls) for name in CLUSTER_CLIENTS})
    try:
        _rounds(args, clients, urls, uvloop.run)
    finally:
        if cluster is not None:
            cluster.stop()
    import redis

    cleanup: Any = redis.Redis.from_url(args.redis)
    keys = list(cleanup.scan_iter(match=PREFIX + "*"))
    if keys:
        cleanup.delete(*keys)
    return 0


def _rounds(args: Any, clients: dict[str, Any], urls: dict[str, list[str]], run: Any) -> None:
    """Each client once per round, order alternating; then the medians. Redis CPU: all its servers."""
    rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in clients}
    for r in range(args.rounds):
        names = list(clients) if r % 2 == 0 else list(clients)[::-1]
        for name in names:
            before = sum(redis_cpu(u) for u in urls[name])
            wall, used = run(clients[name](urls[name][0], args.calls, args.clients))
            server = sum(redis_cpu(u) for u in urls[name]) - before
            rows[name].append((args.calls / wall, used / args.calls * 1e6, server / args.calls * 1e6))
            print(f"round {r + 1} {name:<28} {rows[name][-1][0]:8.0f} calls/s  client {rows[name][-1][1]:5.1f} µs/call"
                  f"  Redis {rows[name][-1][2]:5.1f} µs/call", flush=True)
    print(f"\nmedians, C={args.clients}, {args.calls} calls per round, {args.rounds} rounds:")
    for name, values in rows.items():
        rate, client, server = (statistics.median(v[i] for v in values) for i in range(3))
        print(f"{name:<28} {rate:8.0f} calls/s  client {client:5.1f} µs/call  Redis {server:5.1f} µs/call")


if __name__ == "__main__":
    sys.exit(main())
