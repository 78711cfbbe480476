"""Load-test a live server over real websockets: the original stress scenarios, and a soak."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from chat_ws.conf import get_settings
from chat_ws.stress import SCENARIOS, StressConfig, render, run
from chat_ws.stress.config import DEFAULT_SWEEP_COMMAND
from chat_ws.stress.progress import ProgressBar

DEFAULTS = StressConfig()


class Command(BaseCommand):
    help = (
        "Replay the original stress scenarios against a live server over real websockets and check "
        "that the server kept nothing of its clients afterwards. Exit code 1 on any error or leak. "
        "Start the server with CHAT_WS_RATE_LIMIT / CHAT_WS_RATE_BURST raised and a health token."
    )

    def add_arguments(self, parser: Any) -> None:
        d = DEFAULTS
        parser.add_argument("--url", default=d.url, help="websocket endpoint (default %(default)s)")
        parser.add_argument(
            "--token", help="health token of the server, for the leak check (default: this site's HEALTH_TOKEN)"
        )
        parser.add_argument(
            "--scenario",
            action="append",
            choices=[*SCENARIOS, "all", "soak"],
            help="scenario to run; repeat for several (default: all five)",
        )
        parser.add_argument("--processes", type=int, default=d.processes, help="load-generator processes")
        parser.add_argument("--codec", choices=["edn", "json"], default=d.codec)
        parser.add_argument("--timeout", type=float, default=d.timeout, help="seconds any expected event may take")
        parser.add_argument("--connect-concurrency", type=int, default=d.connect_concurrency,
                            help="handshakes in flight at once (default %(default)s)")
        parser.add_argument("--origin", help="Origin header (default: the server's own)")
        parser.add_argument("--health-url", help="health endpoint (default: /chat_ws/health/ of --url)")
        group = parser.add_argument_group("sizes (defaults: 100 x the original tests)")
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
            "run with the server's settings (default: %(default)s, in this environment)",
        )
        soak = parser.add_argument_group("soak")
        soak.add_argument("--duration", type=float, default=d.duration, help="seconds")
        soak.add_argument("--soak-clients", type=int, default=d.soak_clients)
        soak.add_argument("--think", type=float, default=d.think, help="mean seconds between a client's rounds")
        soak.add_argument("--churn", type=float, default=d.churn, help="probability of reconnecting after a round")
        soak.add_argument("--server-pid", type=int, help="sample this process's memory (RSS from /proc)")
        soak.add_argument("--sample-interval", type=float, default=d.sample_interval, help="seconds")
        parser.add_argument("--json", metavar="FILE", help="write the raw report (every latency) here")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def handle(self, *args: Any, **options: Any) -> None:
        chosen = options["scenario"] or ["all"]
        scenarios = [s for name in chosen for s in (SCENARIOS if name == "all" else [name])]
        config = StressConfig(
            url=options["url"],
            token=options["token"] or get_settings()["HEALTH_TOKEN"],
            origin=options["origin"],
            health_url=options["health_url"],
            processes=options["processes"],
            codec=options["codec"],
            timeout=options["timeout"],
            connect_concurrency=options["connect_concurrency"],
            concurrent_clients=options["concurrent_clients"],
            pings=options["pings"],
            ping_interval=options["ping_interval"],
            cycles=options["cycles"],
            cycle_concurrency=options["cycle_concurrency"],
            questions=options["questions"],
            clients=options["clients"],
            bursts=options["bursts"],
            burst_size=options["burst_size"],
            burst_clients=options["burst_clients"],
            cleanup_clients=options["cleanup_clients"],
            pending=options["pending"],
            sweep_command=options["sweep_command"],
            duration=options["duration"],
            soak_clients=options["soak_clients"],
            think=options["think"],
            churn=options["churn"],
            server_pid=options["server_pid"],
            sample_interval=options["sample_interval"],
            scenarios=list(dict.fromkeys(scenarios)),
        )
        try:
            report = run(config, ProgressBar(sys.stderr, enabled=not options["no_progress"]))
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(render(report))
        for scenario in report.scenarios:
            memory = scenario.extra.get("memory")
            if memory and "drift_kib" in memory:
                self.stdout.write(
                    f"{scenario.name}: server RSS {memory['first_kib']} -> {memory['last_kib']} KiB "
                    f"(max {memory['max_kib']}); drift since warm-up {memory['drift_kib']:+d} KiB, "
                    f"{memory['slope_kib_per_min']:+.1f} KiB/min"
                )
        if options["json"]:
            with open(options["json"], "w") as out:
                json.dump(report.as_dict(), out, indent=1, default=str)
            self.stdout.write(f"raw report written to {options['json']}")
        if not report.ok:
            failed = [s.name for s in report.scenarios if not s.ok]
            raise CommandError(f"errors or leaks in: {', '.join(failed)}", returncode=1)
        self.stdout.write(f"run {report.run_id}: every scenario passed with no leaks")
