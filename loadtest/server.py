"""Out-of-band calls to the server under test: the demo's leak report and the forced sweep."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from loadtest.config import StressConfig

LEAK_POLL = 0.1  # seconds between leak report requests while leftovers drain
HTTP_TIMEOUT = 10.0  # seconds per leak report request


class LeakCheckUnavailable(Exception):
    """The server gave no leak report."""


def fetch_leaks(config: StressConfig, prefix: str) -> dict[str, int]:
    """GET the demo's leak report for ``client_prefix=prefix`` with the token; its ``leaks`` counts."""
    url = f"{config.leaks()}?{urlencode({'client_prefix': prefix})}"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if config.token:
        request.add_header("Authorization", f"Bearer {config.token}")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        hint = " (no --token given)" if exc.code == 403 and not config.token else ""
        raise LeakCheckUnavailable(f"the leak report answered HTTP {exc.code}{hint}") from exc
    except (OSError, urllib.error.URLError) as exc:
        raise LeakCheckUnavailable(f"the leak report is unreachable: {exc}") from exc
    try:
        report = json.loads(body)
    except ValueError as exc:
        raise LeakCheckUnavailable("the leak report is not JSON") from exc
    leaks = report.get("leaks") if isinstance(report, dict) else None
    if not isinstance(leaks, dict):
        raise LeakCheckUnavailable("the leak report has no 'leaks'")
    return {str(k): int(v) for k, v in leaks.items()}


def settle_leaks(config: StressConfig, prefix: str) -> tuple[dict[str, int], float]:
    """Poll the leak report until every count is 0 or ``leak_settle`` seconds pass.

    Returns the last counts and the seconds it took. The server forgets a client before it
    closes the socket, but a few rows (a session closed by the consumer's disconnect) may
    follow the close by a moment.
    """
    began = time.monotonic()
    while True:
        leaks = fetch_leaks(config, prefix)
        elapsed = time.monotonic() - began
        if not any(leaks.values()) or elapsed >= config.leak_settle:
            return leaks, elapsed
        time.sleep(LEAK_POLL)  # polling a remote count: there is no event to wait on


@dataclass
class SweepOutcome:
    """What the forced sweep commands did."""

    ok: bool = True
    duration: float = 0.0  # seconds
    started_at: float = 0.0  # unix seconds
    forced: int = 0
    rejected: int = 0
    output: list[str] = field(default_factory=list)


def sweep_commands(config: StressConfig, client_ids: list[str]) -> list[list[str]]:
    """The argv lists of the sweep command, ``{clients}`` filled with batches of client-ids."""
    template = shlex.split(config.sweep_command)
    argv = [sys.executable if part == "{python}" else part for part in template]
    if "{clients}" not in argv:
        return [argv]
    at = argv.index("{clients}")
    batch = max(1, config.sweep_batch)
    return [
        argv[:at] + client_ids[i : i + batch] + argv[at + 1 :] for i in range(0, len(client_ids), batch)
    ]


def sweep_report(stdout: str) -> dict[str, Any] | None:
    """The JSON report ``chat_ws_sweep --json`` prints as its last line; None when there is none."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            report = json.loads(line)
        except ValueError:
            continue
        return report if isinstance(report, dict) else None
    return None


def run_sweep(config: StressConfig, client_ids: list[str]) -> SweepOutcome:
    """Run the forced sweep command(s) for these clients; add up their JSON reports."""
    outcome = SweepOutcome(started_at=time.time())
    began = time.monotonic()
    for argv in sweep_commands(config, client_ids):
        try:
            done = subprocess.run(
                argv,
                env=config.sweep_env,
                cwd=config.sweep_cwd,
                capture_output=True,
                text=True,
                timeout=max(config.timeout, 600),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            outcome.ok = False
            outcome.output.append(f"{argv[0]}: {exc}")
            break
        text = (done.stdout + done.stderr).strip()
        outcome.output.append(text[-500:])
        if done.returncode != 0:
            outcome.ok = False
            break
        report = sweep_report(done.stdout)
        if report is None:
            outcome.ok = False
            outcome.output.append("the sweep command printed no JSON report (chat_ws_sweep --json)")
            break
        outcome.forced += int(report.get("forced", 0))
        # A forced client's questions are rejected; those already without a record count as orphaned.
        outcome.rejected += int(report.get("rejected", 0)) + int(report.get("orphaned", 0))
    outcome.duration = time.monotonic() - began
    return outcome
