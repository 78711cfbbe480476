"""Celery tasks (optional: defined only when Celery is installed).

Schedule the sweep with Celery beat, one entry for the whole site (the sweep takes a lock, so
a second beat or a ``chat_ws_sweep --loop`` next to it does no harm)::

    from chat_ws.tasks import beat_schedule

    CELERY_BEAT_SCHEDULE = {**beat_schedule()}   # {"chat-ws-sweep": every SWEEP_INTERVAL seconds}
"""

from __future__ import annotations

from typing import Any

from chat_ws import sweep as sweeping
from chat_ws import sweeper
from chat_ws.conf import get_settings

BEAT_ENTRY = "chat-ws-sweep"  # name of the beat schedule entry
TASK_NAME = "chat_ws.tasks.sweep"


def beat_schedule() -> dict[str, dict[str, Any]]:
    """The beat entry: a sweep every SWEEP_INTERVAL seconds, dropped if not started by the next."""
    interval = float(get_settings()["SWEEP_INTERVAL"])
    return {BEAT_ENTRY: {"task": TASK_NAME, "schedule": interval, "options": {"expires": interval}}}


def run_sweep(*, now: float | None = None, dry_run: bool = False) -> dict[str, Any]:
    """One sweep pass from synchronous code, with a sweeper heartbeat; returns the report."""
    ttl = sweeper.heartbeat_ttl(float(get_settings()["SWEEP_INTERVAL"]))

    async def once() -> sweeping.SweepReport:
        if not dry_run:
            await sweeper.heartbeat(ttl, "celery")
        return await sweeping.sweep(now=now, dry_run=dry_run)

    return sweeper.run_sync(once).as_dict()


try:
    from celery import shared_task
except ImportError:  # Celery is optional
    pass
else:

    @shared_task(name=TASK_NAME, ignore_result=False)
    def sweep(now: float | None = None, dry_run: bool = False) -> dict[str, Any]:
        """One sweep pass; the result is the SweepReport as a dict."""
        return run_sweep(now=now, dry_run=dry_run)
