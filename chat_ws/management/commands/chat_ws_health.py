"""Print the health report."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from chat_ws.health import health
from chat_ws.sweeper import run_sync


class Command(BaseCommand):
    help = "Print the health report as JSON; exit 1 when unhealthy."
    requires_system_checks: list[str] = []  # an unreachable Redis is a report, not a check failure

    def handle(self, *args: Any, **options: Any) -> None:
        report = run_sync(health)
        self.stdout.write(json.dumps(report.as_dict(), indent=2))
        if not report.healthy:
            raise CommandError("unhealthy: " + "; ".join(report.problems), returncode=1)
