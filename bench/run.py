"""chat_ws against python-socketio, one run, interleaved: the server asks, the client answers at once.

Run from the checkout: ``.venv/bin/python bench/run.py`` (``make bench``). Needs Redis
(``--redis``, default database 14; only keys under this run's prefix are written and deleted).
Writes ``bench/results/latest.md``, ``latest.json`` and ``latest.png`` and prints the ratios
against python-socketio. See bench/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.clients import Target  # noqa: E402
from bench.generator import Generator  # noqa: E402
from bench.report import write_results  # noqa: E402
from bench.servers import Lab, Server, cpu_seconds, rss_tree_kib, wait_quiet  # noqa: E402

REFERENCE = "python-socketio (uvicorn)"
CLUSTER_TARGET = "chat_ws EDN (uvicorn) on Redis Cluster"
# key: (table name, server kind, codec); servers of the same kind are shared between codecs.
TARGETS = {
    "daphne-edn": ("chat_ws EDN (daphne)", "daphne", "edn"),
    "uvicorn-edn": ("chat_ws EDN (uvicorn, make serve)", "uvicorn", "edn"),
    "granian-edn": ("chat_ws EDN (granian)", "granian", "edn"),
    "uvicorn-websockets-edn": ("chat_ws EDN (uvicorn, --ws websockets)", "uvicorn-websockets", "edn"),
    "daphne-json": ("chat_ws JSON (daphne)", "daphne", "json"),
    "socketio-redis": ("python-socketio + Redis (uvicorn)", "socketio-redis", ""),
}
DEFAULT_TARGETS = ["daphne-edn", "uvicorn-edn", "daphne-json", "socketio-redis"]
ROUND_TRIPS = {1: 3000, 50: 6000, 500: 10000}  # round trips per measurement at each concurrency
OPEN_CONCURRENCY = 100  # handshakes in flight while setting up (not while measuring connects)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are taken over them)")
    p.add_argument("--sizes", type=_ints, default=[1, 50, 500], help="concurrent clients, comma-separated")
    p.add_argument("--round-trips", type=int, help="round trips per measurement (default by size: 1500/3000/5000)")
    p.add_argument("--connects", type=int, default=1000, help="concurrent connects measured per round (0: skip)")
    p.add_argument("--idle", type=_ints, default=[2000, 10000], help="idle connections for memory (empty: skip)")
    p.add_argument("--generators", type=int, default=2, help="load-generator processes")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/14", help="Redis for chat_ws (not database 0 or 15)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--quick", action="store_true", help="1 round, sizes 1,50, 200 connects, 2000 idle")
    p.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated target keys, of: {', '.join(TARGETS)} (the reference always runs)",
    )
    p.add_argument("--keep-logs", action="store_true", help="copy the servers' logs to OUT/logs/")
    p.add_argument(
        "--cluster",
        action="store_true",
        help="also serve the demo under uvicorn with its store on a local 3-master Redis Cluster and its "
        "layer sharded over two Redis servers (started and stopped by the run)",
    )
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also serve this git revision of the demo under uvicorn (a worktree), measured in the same run",
    )
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        p.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.quick:
        args.rounds, args.sizes, args.connects, args.idle = 1, [1, 50], 200, [2000]
    return args


class Bench:
    """One run: the lab of servers, the generator, and every measurement taken."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = secrets.token_hex(3)
        self.lab = Lab(args.redis, f"bench-{self.run_id}")
        self.gen = Generator(args.generators)
        self.redis_pid = self.lab.redis_pid()
        self.targets: dict[str, tuple[Target, Server]] = {}
        self.rt: list[dict[str, Any]] = []
        self.connects: list[dict[str, Any]] = []
        self.memory: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.cluster: Any = None
        self.layer_hosts: Any = None
        self.spread: list[dict[str, Any]] = []
        self._commands_before: dict[str, int] = {}

    def start_cluster(self) -> dict[str, str]:
        """A local cluster and two layer hosts; the demo's environment for them."""
        from devtools.redis_cluster import start_cluster, start_standalone

        self.cluster = start_cluster(3)
        self.layer_hosts = start_standalone(2)
        self._commands_before = {url: _node_stats(url)["commands"] for url in self._spread_urls()}
        self.notes.append(
            f"'{CLUSTER_TARGET}': the same server as 'uvicorn-edn', its store on a 3-master Redis Cluster "
            "and its layer on two Redis servers, all on this machine's 2 cores: it shows what the cluster "
            "path costs, not how it scales"
        )
        return {
            "REDIS_URL": self.cluster.url,
            "REDIS_CLUSTER": "1",
            "CHANNEL_LAYER_URLS": ",".join(self.layer_hosts.urls),
        }

    def _spread_urls(self) -> list[str]:
        return [*self.cluster.urls, *self.layer_hosts.urls]

    def record_spread(self) -> None:
        """Keys held and commands served per Redis server of the cluster target (the scaling evidence)."""
        self.spread = []
        for url in self._spread_urls():
            stats = _node_stats(url)
            role = "store master" if url in self.cluster.urls else "layer host"
            self.spread.append(
                {"node": url.rpartition("/")[2], "role": role, "keys": stats["keys"],
                 "commands": stats["commands"] - self._commands_before.get(url, 0)}
            )
        _say("spread " + ", ".join(f"{r['node']} ({r['role']}): {r['keys']} keys, {r['commands']} commands" for r in self.spread))

    def start(self) -> None:
        servers: dict[str, Server] = {}
        for key in self.args.targets:
            name, kind, codec = TARGETS[key]
            server = servers.get(kind) or servers.setdefault(kind, self.lab.start(kind, kind))
            self.targets[name] = (self._target(key, kind, server, codec), server)
        if self.args.baseline:
            rev = self.args.baseline
            server = self.lab.start("baseline", "uvicorn", cwd=self.lab.worktree(rev))
            name = f"chat_ws EDN (uvicorn, make serve) at {rev}"
            self.targets[name] = (Target("baseline-edn", "chat", f"ws://127.0.0.1:{server.port}/ws"), server)
            self.notes.append(f"'{name}' is the demo at revision {rev}, served from a worktree in the same run")
        if self.args.cluster:
            server = self.lab.start("cluster", "uvicorn", env=self.start_cluster())
            self.targets[CLUSTER_TARGET] = (Target("cluster-edn", "chat", f"ws://127.0.0.1:{server.port}/ws"), server)
        socketio = self.lab.start("socketio", "socketio")
        self.targets[REFERENCE] = (Target("socketio", "sio", f"ws://127.0.0.1:{socketio.port}"), socketio)

    @staticmethod
    def _target(key: str, kind: str, server: Server, codec: str) -> Target:
        if kind.startswith("socketio"):
            return Target(key, "sio", f"ws://127.0.0.1:{server.port}")
        return Target(key, "chat", f"ws://127.0.0.1:{server.port}/ws", codec=codec)

    def _cpu(self, server: Server) -> dict[str, float]:
        pids = {"server": [server.pid], "generator": self.gen.pids()}
        if self.cluster is not None and server is self.targets.get(CLUSTER_TARGET, (None, None))[1]:
            pids["redis"] = [p.pid for p in (*self.cluster.procs, *self.layer_hosts.procs)]
        elif self.redis_pid:
            pids["redis"] = [self.redis_pid]
        return {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}

    def _tag(self, what: str) -> str:
        return f"{self.lab.prefix}-{what}-{secrets.token_hex(2)}"

    def warm_up(self) -> None:
        for name, (target, server) in self.targets.items():
            self.gen.open(target, 20, concurrency=20, tag=self._tag("warm"))
            reply = self.gen.converse(20)
            self.gen.close()
            if reply["errors"] or reply["answered"] != 400:
                raise RuntimeError(f"{name} fails the warm-up: {reply['errors']} ({reply['answered']} of 400)")

    def measure_rt(self, round_no: int, name: str, clients: int) -> None:
        target, server = self.targets[name]
        total = self.args.round_trips or ROUND_TRIPS.get(clients, 50 * clients)
        questions = max(2, total // clients)
        opened = self.gen.open(target, clients, concurrency=OPEN_CONCURRENCY, tag=self._tag(f"c{clients}"))
        wait_quiet([server.pid])
        before = self._cpu(server)
        reply = self.gen.converse(questions)
        after = self._cpu(server)
        self.gen.close()
        wait_quiet([server.pid])
        answered = reply["answered"]
        cycles = sorted(reply["cycles"])
        row = {
            "round": round_no,
            "target": name,
            "clients": clients,
            "opened": opened["opened"],
            "answered": answered,
            "expected": clients * questions,
            "seconds": reply["seconds"],
            "rt_per_s": answered / reply["seconds"] if reply["seconds"] else 0.0,
            "p50_ms": _pct(cycles, 50),
            "p99_ms": _pct(cycles, 99),
            "server_p50_ms": statistics.median(reply["server_p50"]) if reply["server_p50"] else None,
            "errors": {**opened["errors"], **reply["errors"]},
        }
        for part in before:
            row[f"{part}_us_per_rt"] = (after[part] - before[part]) / answered * 1e6 if answered else None
        self.rt.append(row)
        _say(
            f"r{round_no} C={clients:<4} {name:<26} {row['rt_per_s']:7.0f} rt/s  p50 {row['p50_ms']:6.1f} ms  "
            f"p99 {row['p99_ms']:6.1f} ms  server {row['server_us_per_rt'] or 0:5.0f} us/rt"
            + (f"  errors {row['errors']}" if row["errors"] else "")
        )

    def measure_connects(self, round_no: int, name: str) -> None:
        target, server = self.targets[name]
        n = self.args.connects
        wait_quiet([server.pid])
        before = cpu_seconds(server.pid)
        reply = self.gen.open(target, n, concurrency=n, tag=self._tag("conn"), idle=True)
        cpu = cpu_seconds(server.pid) - before
        self.gen.close()
        wait_quiet([server.pid])
        row = {
            "round": round_no,
            "target": name,
            "attempted": n,
            "opened": reply["opened"],
            "seconds": reply["seconds"],
            "per_s": reply["opened"] / reply["seconds"] if reply["seconds"] else 0.0,
            "server_us_per_connect": cpu / reply["opened"] * 1e6 if reply["opened"] else None,
            "errors": reply["errors"],
        }
        self.connects.append(row)
        _say(f"r{round_no} connects {name:<26} {row['opened']}/{n} in {row['seconds']:.2f}s = {row['per_s']:.0f}/s {row['errors'] or ''}")

    def measure_memory(self, name: str) -> None:
        target, server = self.targets[name]
        wait_quiet([server.pid])
        base = rss_tree_kib(server.pid)
        held = 0
        for size in self.args.idle:
            reply = self.gen.open(target, size - held, concurrency=OPEN_CONCURRENCY, tag=self._tag("idle"), idle=True)
            held += reply["opened"]
            wait_quiet([server.pid])
            rss = rss_tree_kib(server.pid)
            row = {
                "target": name,
                "connections": size,
                "held": held,
                "errors": reply["errors"],
                "rss_kib": rss,
                "base_kib": base,
                "kib_per_connection": (rss - base) / held if held else None,
                "open_seconds": reply["seconds"],
            }
            self.memory.append(row)
            if name == CLUSTER_TARGET and size == self.args.idle[-1]:
                self.record_spread()  # while the idle clients' records are held
            _say(f"memory {name:<26} {held}/{size} held: {row['kib_per_connection'] or 0:.1f} KiB per connection {reply['errors'] or ''}")

    def run(self) -> None:
        names = list(self.targets)
        for r in range(1, self.args.rounds + 1):
            order = names if r % 2 else names[::-1]  # ABBA ordering evens out drift within a round
            for clients in self.args.sizes:
                for name in order:
                    self.measure_rt(r, name, clients)
            if self.args.connects:
                for name in order:
                    self.measure_connects(r, name)
        if self.args.idle:
            measured: set[int] = set()
            for name in names:
                server = self.targets[name][1]
                if server.pid in measured:
                    self.notes.append(f"{name} shares its server with another target: memory measured once")
                    continue
                measured.add(server.pid)
                self.measure_memory(name)
                self.targets[name][1].stop()  # drops the idle sockets with it
                self.gen.close()

    def finish(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items()},
            "generators": self.args.generators,
            "rt": self.rt,
            "connects": self.connects,
            "memory": self.memory,
            "notes": self.notes,
            "cluster_spread": self.spread,
        }


def _node_stats(url: str) -> dict[str, int]:
    import redis

    client: Any = redis.Redis.from_url(url)
    try:
        return {"keys": int(client.dbsize()), "commands": int(client.info("stats")["total_commands_processed"])}
    finally:
        client.close()


def _pct(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered))) - 1))]


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.redis.rstrip("/").endswith(("/0", "/15")):
        raise SystemExit("use a Redis database other than 0 and 15 for benchmarks")
    began = time.monotonic()
    bench = Bench(args)
    try:
        bench.start()
        bench.warm_up()
        bench.run()
    finally:
        bench.gen.stop()
        bench.lab.stop()
        if bench.args.cluster and not bench.spread and bench.cluster is not None:
            bench.record_spread()
        for servers in (bench.cluster, bench.layer_hosts):
            if servers is not None:
                servers.stop()
        bench.lab.cleanup(args.out / "logs" if args.keep_logs else None)
    data = bench.finish()
    data["seconds"] = round(time.monotonic() - began, 1)
    print(write_results(data, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
