"""A local Redis Cluster and standalone Redis servers for development and tests (``make cluster``).

``start_cluster(3)`` starts three cluster-enabled redis-servers on free ports of 127.0.0.1
(without persistence, each in its own process group, their logs and nodes-<port>.conf in one
temporary directory), joins them with ``redis-cli --cluster create`` (no replicas) and returns
once every node reports ``cluster_state:ok`` with all 16384 slots assigned and the same slot map.
``start_standalone(2)`` starts plain redis-servers, e.g. for a channel layer sharded over hosts.
Both return an object with ``.urls`` and ``.stop()`` that is also a context manager.

``python -m devtools.redis_cluster up [--masters 3] [--layer-hosts 2]`` starts both, prints
``export REDIS_URL=...``, ``export REDIS_CLUSTER=1`` and ``export CHANNEL_LAYER_URLS=...`` and
keeps them running until SIGINT, SIGTERM or SIGHUP, then stops them and removes their files.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402
from redis.retry import Retry  # noqa: E402

from devtools.processes import LOCALHOST, STOP_TIMEOUT, free_port  # noqa: E402

logger = logging.getLogger(__name__)

SLOTS = 16384  # hash slots of a Redis Cluster
BUS_PORT_OFFSET = 10000  # a node's cluster bus listens on its port + 10000 (the default of every version)
MAX_PORT = 65535
NODE_TIMEOUT_MS = 5000  # --cluster-node-timeout
START_TIMEOUT = 10.0  # seconds a redis-server may take to answer PING
CREATE_TIMEOUT = 60.0  # seconds redis-cli --cluster create may take
CLUSTER_TIMEOUT = 20.0  # seconds the nodes may take to agree on one slot map once created
POLL = 0.05  # seconds between two questions to a server that is not ready yet
PORT_ATTEMPTS = 5  # a port taken between choosing and binding it: try that many others
LOG_TAIL = 20  # lines of a log quoted in an error
PORT_TAKEN = "Address already in use"


def _bindable(port: int, host: str = LOCALHOST) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(100):
        port = free_port()
        if port + BUS_PORT_OFFSET <= MAX_PORT and _bindable(port + BUS_PORT_OFFSET):
            return port
    raise RuntimeError("found no free port whose port + 10000 is free as well")


def tail(path: Path, lines: int = LOG_TAIL) -> str:
    """The last lines of a log, for an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _failure(what: str, log: Path) -> RuntimeError:
    return RuntimeError(f"{what}; last lines of {log}:\n{tail(log)}")


def _client(port: int) -> redis.Redis:
    """A client of a local server that gives up at once: the callers poll with their own deadline."""
    return redis.Redis(
        host=LOCALHOST, port=port, socket_connect_timeout=1, socket_timeout=2, retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


class _PortTaken(Exception):
    pass


@dataclass(frozen=True)
class Master:
    """A master of the cluster and the slot ranges (first, last; both included) it owns."""

    host: str
    port: int
    slots: tuple[tuple[int, int], ...]

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    @property
    def slot_count(self) -> int:
        return sum(last - first + 1 for first, last in self.slots)

    def owns(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


def slot_map(client: redis.Redis) -> list[Master]:
    """The masters a node lists in CLUSTER SLOTS, ordered by their first slot."""
    ranges: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for entry in client.execute_command("CLUSTER SLOTS"):
        first, last, primary = int(entry[0]), int(entry[1]), entry[2]
        ranges.setdefault((str(primary[0]), int(primary[1])), []).append((first, last))
    masters = [Master(host, port, tuple(sorted(owned))) for (host, port), owned in ranges.items()]
    return sorted(masters, key=lambda master: master.slots[0])


def cluster_info(client: redis.Redis) -> dict[str, str]:
    """CLUSTER INFO as a mapping of strings (redis-py parses it or not, depending on its version)."""
    reply: Any = client.execute_command("CLUSTER INFO")
    if isinstance(reply, dict):
        return {str(key): str(value) for key, value in reply.items()}
    pairs = (line.split(":", 1) for line in str(reply).splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


class Servers:
    """redis-servers started here, each in its own process group, sharing one temporary directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.logs: list[Path] = []

    @property
    def urls(self) -> list[str]:
        return [f"redis://{LOCALHOST}:{port}" for port in self.ports]

    def start_server(self, args: Callable[[int], list[str]], pick_port: Callable[[], int] = free_port) -> int:
        """Start one redis-server with args(port) on a free port; its port once it answers PING.

        A port somebody else bound between choosing and binding it: another port, PORT_ATTEMPTS times.
        """
        for _ in range(PORT_ATTEMPTS):
            port = pick_port()
            log = self.dir / f"redis-{port}.log"
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    ["redis-server", *args(port)],
                    cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                self._wait_for_ping(proc, port, log)
            except _PortTaken:
                proc.wait()
                logger.info("port %d was taken before redis-server bound it; trying another", port)
                continue
            except BaseException:
                self.procs.append(proc)  # stopped by stop() with the others
                raise
            self.procs.append(proc)
            self.ports.append(port)
            self.logs.append(log)
            return port
        raise RuntimeError(f"redis-server found no free port in {PORT_ATTEMPTS} attempts (see {self.dir})")

    @staticmethod
    def _wait_for_ping(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = START_TIMEOUT) -> None:
        """Until the server answers on its port, and it is this process that answers (not another
        server that bound the port first)."""
        client = _client(port)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if proc.poll() is not None:
                    if PORT_TAKEN in tail(log):
                        raise _PortTaken(port)
                    raise _failure(f"redis-server on port {port} exited with {proc.returncode}", log)
                if time.monotonic() >= deadline:
                    raise _failure(f"redis-server on port {port} did not answer PING within {timeout:g}s", log)
                try:
                    if client.ping() and int(client.info("server")["process_id"]) == proc.pid:
                        return
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    pass  # not listening yet
                time.sleep(POLL)  # a bounded poll of the server's state: nothing to subscribe to
        finally:
            client.close()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM every server's process group, wait, SIGKILL what outlives timeout; remove the directory."""
        running = [proc for proc in self.procs if proc.poll() is None]
        for proc in running:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("redis-server %d ignored SIGTERM for %gs; killing it", proc.pid, timeout)
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=timeout)
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the group this process leads (start_new_session=True)
    except ProcessLookupError:
        pass


def _new_dir(prefix: str, base_dir: str | None) -> Path:
    if base_dir is not None:
        os.makedirs(base_dir, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base_dir))


def _common_args(port: int, directory: Path) -> list[str]:
    return [
        "--port", str(port), "--bind", LOCALHOST, "--protected-mode", "no",
        "--save", "", "--appendonly", "no", "--dir", str(directory),
    ]


class Standalones(Servers):
    """Plain redis-servers without persistence (the hosts of a sharded channel layer)."""


class Cluster(Servers):
    """A Redis Cluster of masters without replicas; ``url`` is the seed a client starts from."""

    @property
    def url(self) -> str:
        return self.urls[0]

    def masters(self) -> list[Master]:
        """The masters and their slots, as the seed node lists them (CLUSTER SLOTS)."""
        client = _client(self.ports[0])
        try:
            return slot_map(client)
        finally:
            client.close()

    def master_for_slot(self, slot: int) -> Master:
        """The master that owns a slot (0..16383)."""
        if not 0 <= slot < SLOTS:
            raise ValueError(f"slot {slot} is not in 0..{SLOTS - 1}")
        for master in self.masters():
            if master.owns(slot):
                return master
        raise RuntimeError(f"no master owns slot {slot}")

    def create(self, timeout: float = CREATE_TIMEOUT) -> None:
        """Join the started nodes into one cluster: redis-cli --cluster create, no replicas."""
        log = self.dir / "cluster-create.log"
        addresses = [f"{LOCALHOST}:{port}" for port in self.ports]
        with open(log, "ab") as out:
            try:
                done = subprocess.run(
                    ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                    cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                raise _failure(f"redis-cli --cluster create took more than {timeout:g}s", log) from None
        if done.returncode != 0:
            raise _failure(f"redis-cli --cluster create exited with {done.returncode}", log)

    def wait_until_ready(self, timeout: float = CLUSTER_TIMEOUT) -> None:
        """Until every node reports cluster_state:ok, all slots assigned, and lists the same masters."""
        clients = [_client(port) for port in self.ports]
        deadline = time.monotonic() + timeout
        problem = "not asked yet"
        try:
            while True:
                for proc, port, log in zip(self.procs, self.ports, self.logs):
                    if proc.poll() is not None:
                        raise _failure(f"cluster node {port} exited with {proc.returncode}", log)
                try:
                    problem = self._disagreement(clients)
                except redis.exceptions.RedisError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                if not problem:
                    return
                if time.monotonic() >= deadline:
                    log = self.dir / "cluster-create.log"
                    raise _failure(f"the cluster is not ready after {timeout:g}s: {problem}", log)
                time.sleep(POLL)  # a bounded poll of the nodes' state: nothing to subscribe to
        finally:
            for client in clients:
                client.close()

    def _disagreement(self, clients: Sequence[redis.Redis]) -> str:
        """Why the cluster is not ready yet; "" once it is."""
        maps = []
        for port, client in zip(self.ports, clients):
            info = cluster_info(client)
            if info.get("cluster_state") != "ok":
                return f"node {port}: cluster_state:{info.get('cluster_state')}"
            if info.get("cluster_slots_assigned") != str(SLOTS):
                return f"node {port}: cluster_slots_assigned:{info.get('cluster_slots_assigned')}"
            if info.get("cluster_known_nodes") != str(len(self.ports)):
                return f"node {port}: cluster_known_nodes:{info.get('cluster_known_nodes')}"
            maps.append(slot_map(client))
        if any(other != maps[0] for other in maps[1:]):
            return "the nodes list different masters in CLUSTER SLOTS"
        if sorted(master.port for master in maps[0]) != sorted(self.ports):
            return f"CLUSTER SLOTS lists masters {[m.port for m in maps[0]]}, not {self.ports}"
        return ""


def start_cluster(masters: int = 3, *, base_dir: str | None = None) -> Cluster:
    """Start a Redis Cluster of ``masters`` masters (at least 3) on 127.0.0.1; return it once ready.

    The servers' logs and node files go to a new directory under base_dir (default: the system's
    temporary directory), removed by ``stop()``. Raises RuntimeError (quoting a log) on failure,
    after stopping whatever it had started.
    """
    if masters < 3:
        raise ValueError("redis-cli --cluster create needs at least 3 masters")
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (Debian: apt-get install redis-server redis-tools)")
    started = time.monotonic()
    cluster = Cluster(_new_dir("chat_ws_cluster_", base_dir))
    try:
        for _ in range(masters):
            cluster.start_server(
                lambda port: [
                    *_common_args(port, cluster.dir),
                    "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                ],
                pick_port=cluster_port,
            )
        cluster.create()
        cluster.wait_until_ready()
    except BaseException:
        cluster.stop()
        raise
    logger.info(
        "Redis Cluster of %d masters on ports %s ready in %.1fs (%s)",
        masters, cluster.ports, time.monotonic() - started, cluster.dir,
    )
    return cluster


def start_standalone(count: int = 2, *, base_dir: str | None = None) -> Standalones:
    """Start ``count`` plain redis-servers without persistence on 127.0.0.1; return them once they answer."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    servers = Standalones(_new_dir("chat_ws_redis_", base_dir))
    try:
        for _ in range(count):
            servers.start_server(lambda port: _common_args(port, servers.dir))
    except BaseException:
        servers.stop()
        raise
    logger.info("%d standalone redis-servers on ports %s", count, servers.ports)
    return servers


# ---------------------------------------------------------------------- the command line
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stop(BaseException):
    """A stop signal arrived (a BaseException, like KeyboardInterrupt: no `except Exception` catches it)."""


def exports(cluster: Cluster, layers: Standalones | None) -> list[str]:
    """The shell lines that point the demo at the servers."""
    lines = [f"export REDIS_URL={cluster.url}", "export REDIS_CLUSTER=1"]
    if layers is not None and layers.urls:
        lines.append(f"export CHANNEL_LAYER_URLS={','.join(layers.urls)}")
    return lines


def up(masters: int, layer_hosts: int, base_dir: str | None = None) -> int:
    """Start the cluster and the layer hosts, print the exports, wait for a stop signal, stop them."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        for sig in STOP_SIGNALS:  # once stopping, further signals do not interrupt the teardown
            signal.signal(sig, signal.SIG_IGN)
        raise _Stop(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    cluster: Cluster | None = None
    layers: Standalones | None = None
    try:
        started = time.monotonic()
        cluster = start_cluster(masters, base_dir=base_dir)
        if layer_hosts:
            layers = start_standalone(layer_hosts, base_dir=base_dir)
        print("\n".join(exports(cluster, layers)), flush=True)
        print(
            f"# Redis Cluster ready in {time.monotonic() - started:.1f}s (logs in {cluster.dir}"
            + (f" and {layers.dir}" if layers is not None else "")
            + "); Ctrl-C stops it",
            file=sys.stderr, flush=True,
        )
        while True:
            signal.pause()  # until a stop signal's handler raises _Stop
    except _Stop:
        return 0
    except RuntimeError as exc:
        print(f"redis_cluster: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        if layers is not None:
            layers.stop()
        if cluster is not None:
            cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.redis_cluster", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start a cluster and layer hosts until Ctrl-C or SIGTERM")
    start.add_argument("--masters", type=int, default=3, help="cluster masters, at least 3 (default %(default)s)")
    start.add_argument(
        "--layer-hosts", type=int, default=2, help="standalone servers for the channel layer (default %(default)s)"
    )
    start.add_argument("--base-dir", default=None, help="where the servers' temporary directories go")
    options = parser.parse_args(argv)
    if options.masters < 3:
        parser.error("--masters: redis-cli --cluster create needs at least 3")
    if options.layer_hosts < 0:
        parser.error("--layer-hosts cannot be negative")
    logging.basicConfig(level=logging.WARNING, format="redis_cluster: %(message)s")
    return up(options.masters, options.layer_hosts, options.base_dir)


if __name__ == "__main__":
    sys.exit(main())
