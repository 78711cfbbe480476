"""Run the sweep once, in a loop, or force clients out."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from chat_ws import sweep as sweeping
from chat_ws import sweeper
from chat_ws.conf import get_settings
from chat_ws.exceptions import StoreUnavailable


class Command(BaseCommand):
    help = (
        "Sweep once: alive? to silent clients, forget those that did not answer or did not come "
        "back, fail expired and orphaned questions, write last-seen times to the database."
    )
    as_json = False  # --json: print the report as one JSON line instead of the summary

    def add_arguments(self, parser: Any) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--dry-run", action="store_true", help="count what a pass would do; change nothing")
        mode.add_argument(
            "--wait",
            action="store_true",
            help="send alive?, wait out ALIVE_RESPONSE_TIMEOUT, then forget the clients that did not answer",
        )
        mode.add_argument("--loop", action="store_true", help="sweep every --interval seconds until SIGTERM/SIGINT")
        mode.add_argument("--force", nargs="+", metavar="CLIENT_ID", help="forget these clients now")
        mode.add_argument("--force-all", action="store_true", help="forget every client now")
        parser.add_argument(
            "--interval", type=float, help="seconds between passes with --loop (default: SWEEP_INTERVAL)"
        )
        parser.add_argument("--json", action="store_true", help="print the report as one JSON line")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["interval"] is not None and not options["loop"]:
            raise CommandError("--interval goes with --loop")
        if options["json"] and options["loop"]:
            raise CommandError("--json does not go with --loop")
        self.as_json = bool(options["json"])
        try:
            if options["loop"]:
                interval = options["interval"] or float(get_settings()["SWEEP_INTERVAL"])
                if interval <= 0:
                    raise CommandError("--interval must be positive")
                passes = sweeper.run_sync(lambda: self._loop(interval))
                self.stdout.write(f"sweeper stopped after {passes} pass(es)")
            elif options["force"] or options["force_all"]:
                ids = None if options["force_all"] else options["force"]
                report = sweeper.run_sync(lambda: sweeping.force(ids))
                self._report(
                    report, f"forgot {report.forced} client(s); {report.rejected + report.orphaned} question(s) rejected"
                )
            elif options["wait"]:
                report = sweeper.run_sync(self._wait)
                self._report(report, report.summary())
            else:
                report = sweeper.run_sync(lambda: sweeping.sweep(dry_run=options["dry_run"]))
                self._report(report, report.summary())
        except StoreUnavailable as exc:
            raise CommandError(f"cannot sweep: {exc}") from exc

    def _report(self, report: sweeping.SweepReport, line: str) -> None:
        """The one line of output: the summary, or with --json the whole report."""
        self.stdout.write(json.dumps(report.as_dict(), sort_keys=True) if self.as_json else line)

    async def _wait(self) -> sweeping.SweepReport:
        first = await sweeping.sweep()
        if first.skipped or not first.alive_sent:
            return first
        window = float(get_settings()["ALIVE_RESPONSE_TIMEOUT"])
        note = f"sent {first.alive_sent} alive?; waiting {window:g}s for answers"
        (self.stderr if self.as_json else self.stdout).write(note)  # stdout keeps the one JSON line
        await asyncio.sleep(window)  # the response window itself, as the original sweep waited
        return first + await sweeping.sweep()

    async def _loop(self, interval: float) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.stdout.write(f"sweeping every {interval:g}s; SIGTERM or SIGINT stops")
        try:
            return await sweeper.run(interval, stop, lambda report: self.stdout.write(report.summary()))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
