"""``python -m loadtest``: the original stress scenarios, and a soak, against a live demo server;
``--scenario chaos`` (loadtest.chaos) starts servers of its own and injects faults."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from loadtest import SCENARIOS, StressConfig, render, run
from loadtest.config import DEFAULT_SWEEP_COMMAND
from loadtest.progress import ProgressBar

DEFAULTS = StressConfig()
DEMO_SETTINGS = "stbd_project.settings"


def parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    p = argparse.ArgumentParser(
        prog="python -m loadtest",
        description=(
            "Replay the original stress scenarios against a live demo server over real websockets and "
            "check that the server kept nothing of its clients afterwards. Exit code 1 on any error or "
            "leak. Start the server with CHAT_WS_RATE_LIMIT / CHAT_WS_RATE_BURST raised and a health token."
        ),
    )
    p.add_argument("--url", default=d.url, help="websocket endpoint (default %(default)s)")
    p.add_argument(
        "--token",
        default=os.environ.get("CHAT_WS_HEALTH_TOKEN") or None,
        help="the server's health token, for the leak report (default: $CHAT_WS_HEALTH_TOKEN)",
    )
    p.add_argument(
        "--scenario",
        action="append",
        choices=[*SCENARIOS, "all", "soak", "chaos"],
        help="scenario to run; repeat for several (default: all five); chaos runs alone, with its own "
        "options (python -m loadtest --scenario chaos --help)",
    )
    p.add_argument("--processes", type=int, default=d.processes, help="load-generator processes")
    p.add_argument("--codec", choices=["edn", "json"], default=d.codec)
    p.add_argument("--timeout", type=float, default=d.timeout, help="seconds any expected event may take")
    p.add_argument(
        "--connect-concurrency",
        type=int,
        default=d.connect_concurrency,
        help="handshakes in flight at once (default %(default)s)",
    )
    p.add_argument("--origin", help="Origin header (default: the server's own)")
    p.add_argument("--leaks-url", help="the demo's leak report (default: /demo/leaks of --url)")
    group = p.add_argument_group("sizes (defaults: 100 x the original tests)")
    group.add_argument("--concurrent-clients", type=int, default=d.concurrent_clients)
    group.add_argument("--pings", type=int, default=d.pings, help="pings per concurrent client")
    group.add_argument("--ping-interval", type=float, default=d.ping_interval, help="seconds")
    group.add_argument("--cycles", type=int, default=d.cycles)
    group.add_argument("--cycle-concurrency", type=int, default=d.cycle_concurrency)
    group.add_argument("--questions", type=int, default=d.questions)
    group.add_argument("--clients", type=int, default=d.clients, help="clients the questions are spread over")
    group.add_argument("--bursts", type=int, default=d.bursts)
    group.add_argument("--burst-size", type=int, default=d.burst_size)
    group.add_argument("--burst-clients", type=int, default=d.burst_clients)
    group.add_argument("--cleanup-clients", type=int, default=d.cleanup_clients)
    group.add_argument("--pending", type=int, default=d.pending, help="pending questions per cleanup client")
    group.add_argument(
        "--sweep-command",
        default=DEFAULT_SWEEP_COMMAND,
        help="forced sweep of the cleanup scenario; {python} and {clients} are filled in; it must "
        "print chat_ws_sweep's JSON report and run with the server's settings (default: %(default)s)",
    )
    group.add_argument(
        "--settings",
        default=os.environ.get("DJANGO_SETTINGS_MODULE") or DEMO_SETTINGS,
        help="DJANGO_SETTINGS_MODULE of the sweep command (default: $DJANGO_SETTINGS_MODULE or %s)"
        % DEMO_SETTINGS,
    )
    soak = p.add_argument_group("soak")
    soak.add_argument("--duration", type=float, default=d.duration, help="seconds")
    soak.add_argument("--soak-clients", type=int, default=d.soak_clients)
    soak.add_argument("--think", type=float, default=d.think, help="mean seconds between a client's rounds")
    soak.add_argument("--churn", type=float, default=d.churn, help="probability of reconnecting after a round")
    soak.add_argument("--server-pid", type=int, help="sample this process's memory (RSS from /proc)")
    soak.add_argument("--sample-interval", type=float, default=d.sample_interval, help="seconds")
    p.add_argument("--json", metavar="FILE", help="write the raw report (every latency) here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def scenarios_of(argv: list[str]) -> list[str]:
    """The --scenario values of a command line, whatever the other options."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--scenario", action="append", default=[])
    return list(pre.parse_known_args(argv)[0].scenario)


def config_from(options: argparse.Namespace) -> StressConfig:
    """The StressConfig of parsed command-line options."""
    chosen = options.scenario or ["all"]
    scenarios = [s for name in chosen for s in (SCENARIOS if name == "all" else [name])]
    names = (
        "url", "token", "origin", "leaks_url", "processes", "codec", "timeout", "connect_concurrency",
        "concurrent_clients", "pings", "ping_interval", "cycles", "cycle_concurrency", "questions",
        "clients", "bursts", "burst_size", "burst_clients", "cleanup_clients", "pending",
        "sweep_command", "duration", "soak_clients", "think", "churn", "server_pid", "sample_interval",
    )  # fmt: skip
    values: dict[str, Any] = {name: getattr(options, name) for name in names}
    return StressConfig(
        **values,
        sweep_env={**os.environ, "DJANGO_SETTINGS_MODULE": options.settings},
        scenarios=list(dict.fromkeys(scenarios)),
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = scenarios_of(argv)
    if "chaos" in chosen:  # its own options and its own servers
        from loadtest import chaos

        if any(s != "chaos" for s in chosen):
            parser().error("the chaos scenario runs alone")
        return chaos.main(argv)
    p = parser()
    options = p.parse_args(argv)
    try:
        report = run(config_from(options), ProgressBar(sys.stderr, enabled=not options.no_progress))
    except ValueError as exc:
        p.error(str(exc))
    print(render(report))
    for scenario in report.scenarios:
        memory = scenario.extra.get("memory")
        if memory and "drift_kib" in memory:
            print(
                f"{scenario.name}: server RSS {memory['first_kib']} -> {memory['last_kib']} KiB "
                f"(max {memory['max_kib']}); drift since warm-up {memory['drift_kib']:+d} KiB, "
                f"{memory['slope_kib_per_min']:+.1f} KiB/min"
            )
    if options.json:
        with open(options.json, "w") as out:
            json.dump(report.as_dict(), out, indent=1, default=str)
        print(f"raw report written to {options.json}")
    if not report.ok:
        failed = [s.name for s in report.scenarios if not s.ok]
        print(f"errors or leaks in: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"run {report.run_id}: every scenario passed with no leaks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
