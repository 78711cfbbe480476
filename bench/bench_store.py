"""Client CPU of the Redis store's hot path per ask/answer cycle: this checkout against a baseline.

``.venv/bin/python bench/bench_store.py [--baseline REV] [--rounds 3] [--cluster] [--step]`` from the
checkout. One cycle is what a round trip asks of the store: ``ask_question``, ``touch`` and
``resolve``, for C concurrent clients (``--clients``, default 50) with a presence record each.
Each round runs this checkout and, with ``--baseline``, the revision REV (a git worktree beside
the run) in turn, order alternating, each in a fresh process on uvloop; the last lines are
medians. With ``--cluster`` this checkout also runs on a local 3-master Redis Cluster. Uses
database 14 of ``--redis`` and keys under its own prefix, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


async def cycles(url: str, cluster: bool, clients: int, per_client: int, step: bool = False) -> dict[str, float]:
    """Run in the checkout on sys.path[0]: client CPU µs per cycle and cycles/s (with ``step``,
    every question a durable step: journaled at resolve, consumed by the next ask)."""
    import asyncio
    import inspect

    from chat_ws.codec import JSON
    from chat_ws.conf import DEFAULTS
    from chat_ws.store.redis import RedisStore
    from chat_ws.types import Question

    try:  # a checkout whose p-keys carry the client's hash
        from chat_ws.store.base import new_p_key as make_key

        def new_key(client_id: str) -> str:
            return str(make_key(client_id))
    except ImportError:  # the layout before it
        from chat_ws.promises import new_p_key as old  # type: ignore[attr-defined]

        def new_key(client_id: str) -> str:
            return str(old())

    prefix = f"bench-store-{secrets.token_hex(3)}"
    conf: dict[str, Any] = {**DEFAULTS, "REDIS_URL": url, "KEY_PREFIX": prefix}
    if cluster:
        conf["REDIS_CLUSTER"] = True
    store = RedisStore(conf)
    with_answer = len(inspect.signature(store.resolve).parameters) > 2  # the answer goes to the script
    ids = [f"client-{i}-{secrets.token_hex(8)}" for i in range(clients)]
    for client_id in ids:
        await store.open_connection(client_id, "srv", f"ch-{client_id}", time.time())

    async def one(client_id: str) -> None:
        for i in range(per_client):
            now = time.time()
            p_key = new_key(client_id)
            question = Question(
                p_key=p_key, client_id=client_id, conversation="bench",
                message={"dispatch-key": "iviewr-says", "text": "How many a week?", "p-key": p_key},
                asked_at=now, expires_at=now + 60, server_id="srv",
            )
            if step:
                question.step = f"s{i}"
            await store.ask_question(question, max_pending=100)
            await store.touch(client_id, now)
            answer = {"dispatch-key": "domain-expert-says", "msg-text": "About 40.", "promise-keys": [p_key]}
            answer_json = JSON.encode(answer)  # both revisions encode it once per answer, for the notice
            if with_answer:
                await store.resolve(client_id, [p_key], answer, now, answer_json=answer_json)
            else:
                await store.resolve(client_id, [p_key])

    await one(ids[0])  # warm: scripts loaded, connections made
    began, used = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(c) for c in ids))
    wall, cpu = time.perf_counter() - began, time.process_time() - used
    for client_id in ids:
        await store.forget_client(client_id)
    await store.close()
    return {"us_per_cycle": cpu / (clients * per_client) * 1e6, "cycles_per_s": clients * per_client / wall}


def child(argv: list[str]) -> int:
    """``--child URL CLUSTER CLIENTS PER_CLIENT``: one measurement, printed as JSON."""
    import uvloop

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stbd_project.settings")
    import django

    django.setup()
    url, cluster, clients, per_client = argv[0], argv[1] == "1", int(argv[2]), int(argv[3])
    step = argv[4:5] == ["step"]
    print(json.dumps(uvloop.run(cycles(url, cluster, clients, per_client, step))))
    return 0


def measure(checkout: Path, url: str, cluster: bool, args: argparse.Namespace, step: bool = False) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run(
        [sys.executable, __file__, "--child", url, "1" if cluster else "0", str(args.clients), str(args.per_client)]
        + (["step"] if step else []),
        cwd=checkout, env=env, capture_output=True, text=True, check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    p.add_argument("--baseline", metavar="REV", help="also measure this git revision (a worktree)")
    p.add_argument("--cluster", action="store_true", help="also measure this checkout on a local 3-master cluster")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--step", action="store_true", help="also measure this checkout with every question a durable step")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--per-client", type=int, default=400, help="cycles per client per measurement")
    args = p.parse_args(argv)
    runs: dict[str, tuple[Path, str, bool, bool]] = {"this checkout": (ROOT, args.redis, False, False)}
    if args.step:
        runs["this checkout, step questions"] = (ROOT, args.redis, False, True)
    worktree = cluster = None
    try:
        if args.baseline:
            worktree = Path(tempfile.mkdtemp(prefix="chat_ws_bench_store_")) / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(worktree), args.baseline], cwd=ROOT, check=True)
            runs[f"baseline {args.baseline}"] = (worktree, args.redis, False, False)
        if args.cluster:
            sys.path.insert(0, str(ROOT))
            from devtools.redis_cluster import start_cluster

            cluster = start_cluster(3)
            runs["this checkout, 3-master cluster"] = (ROOT, cluster.url, True, False)
        rows: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
        for r in range(args.rounds):
            for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
                checkout, url, on_cluster, step = runs[name]
                rows[name].append(measure(checkout, url, on_cluster, args, step))
                print(f"round {r + 1} {name:<32} {rows[name][-1]['us_per_cycle']:6.1f} µs/cycle "
                      f"{rows[name][-1]['cycles_per_s']:8.0f} cycles/s", flush=True)
        print(f"\nmedians, C={args.clients}, {args.clients * args.per_client} cycles per measurement, {args.rounds} rounds:")
        for name, values in rows.items():
            cpu = statistics.median(v["us_per_cycle"] for v in values)
            rate = statistics.median(v["cycles_per_s"] for v in values)
            print(f"{name:<32} {cpu:6.1f} µs/cycle client CPU {rate:8.0f} cycles/s")
    finally:
        if cluster is not None:
            cluster.stop()
        if worktree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
