"""Options of a load test, with the defaults of ``python -m loadtest``."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

SCENARIOS = ("concurrent", "cycling", "promises", "bursts", "cleanup")
"""The original system's five stress tests, in the order ``all`` runs them."""

DEFAULT_SWEEP_COMMAND = "{python} -m django chat_ws_sweep --json --force {clients}"


@dataclass
class StressConfig:
    """Everything a run needs; picklable, so worker processes receive it whole."""

    url: str = "ws://127.0.0.1:8000/ws"  # the server's websocket endpoint
    token: str | None = None  # the server's CHAT_WS HEALTH_TOKEN, for the leak report
    origin: str | None = None  # Origin header; None: http(s)://host:port of url
    leaks_url: str | None = None  # the demo's leak report; None: http(s)://host:port/demo/leaks of url
    processes: int = 1  # load-generator processes; 1 runs in this process
    codec: str = "edn"  # "edn" (the original client) or "json" (subprotocol chat_ws.json)
    timeout: float = 60.0  # seconds any single expected event may take
    connect_concurrency: int = 200  # handshakes in flight at once, over all processes
    # concurrent
    concurrent_clients: int = 5000
    pings: int = 3  # pings per client
    ping_interval: float = 5.0  # seconds between one client's pings
    # cycling
    cycles: int = 1000
    cycle_concurrency: int = 10  # cycles running side by side
    # promises
    questions: int = 10_000
    clients: int = 100  # clients the questions are spread over
    # bursts
    bursts: int = 10
    burst_size: int = 1000  # messages per burst, over all burst clients
    burst_clients: int = 1
    # cleanup
    cleanup_clients: int = 2000
    pending: int = 5  # pending questions per client before the forced sweep
    sweep_command: str = DEFAULT_SWEEP_COMMAND  # {python} and {clients} are filled in; prints JSON
    sweep_env: dict[str, str] | None = None  # environment of the sweep command; None: this one's
    sweep_cwd: str | None = None  # working directory of the sweep command; None: this one's
    sweep_batch: int = 2000  # client-ids per sweep command invocation
    # soak
    duration: float = 60.0  # seconds
    soak_clients: int = 200  # clients connected at any time
    soak_questions: int = 5  # questions per load-test conversation in the mix
    think: float = 1.0  # mean seconds a soak client pauses between rounds
    churn: float = 0.2  # probability that a client reconnects with a new id after each round
    server_pid: int | None = None  # sample this process's RSS during the soak
    sample_interval: float = 2.0  # seconds between memory samples
    # leak check
    leak_settle: float = 10.0  # seconds the leak counts may take to reach 0
    run_id: str = ""  # filled in by the runner when empty
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))

    def http_base(self) -> str:
        parts = urlsplit(self.url)
        scheme = "https" if parts.scheme == "wss" else "http"
        return urlunsplit((scheme, parts.netloc, "", "", ""))

    def origin_header(self) -> str:
        return self.origin or self.http_base()

    def leaks(self) -> str:
        return self.leaks_url or self.http_base() + "/demo/leaks"

    def prefix(self, scenario: str) -> str:
        """The client-id prefix of one scenario of this run."""
        return f"stress-{self.run_id}-{scenario}-"
