"""The load-test tool (python -m loadtest) at tiny sizes against a real daphne with Redis:
no errors, no leftovers."""

from __future__ import annotations

import asyncio
import json
import math
import shlex
import subprocess
import sys
from typing import Any

import pytest

from loadtest import SCENARIOS, StressConfig, render, run
from loadtest.__main__ import config_from, parser
from loadtest.client import SimClient
from loadtest.report import percentile, summarize
from loadtest.server import LeakCheckUnavailable, fetch_leaks, run_sweep, sweep_commands, sweep_report
from tests.live import ROOT

pytestmark = pytest.mark.integration

TOKEN = "stress-test-token"


@pytest.fixture
def server(live_servers: Any) -> Any:
    return live_servers(
        redis=True,
        CHAT_WS_HEALTH_TOKEN=TOKEN,
        CHAT_WS_RATE_LIMIT="100000",
        CHAT_WS_RATE_BURST="100000",
    )


def tiny(server: Any, **overrides: Any) -> StressConfig:
    """Every scenario at a few dozen clients; the sweep runs with the server's settings."""
    options: dict[str, Any] = {
        "url": server.ws_url,
        "token": TOKEN,
        "timeout": 10.0,
        "concurrent_clients": 20,
        "pings": 2,
        "ping_interval": 0.2,
        "cycles": 20,
        "cycle_concurrency": 4,
        "questions": 50,
        "clients": 5,
        "bursts": 3,
        "burst_size": 50,
        "cleanup_clients": 20,
        "pending": 5,
        "sweep_env": server.env,
        "sweep_cwd": str(ROOT),
        "leak_settle": 5.0,
    }
    options.update(overrides)
    return StressConfig(**options)


def assert_clean(report: Any) -> None:
    text = render(report)
    for scenario in report.scenarios:
        assert scenario.error_count == 0, text
        assert scenario.leaks is not None and scenario.leak_count == 0, text
    assert report.ok, text


def test_every_scenario_passes_with_no_leaks(server: Any) -> None:
    report = run(tiny(server))
    assert [s.name for s in report.scenarios] == list(SCENARIOS)
    assert_clean(report)
    by_name = {s.name: s for s in report.scenarios}
    assert len(by_name["concurrent"].result.latencies["ping"]) == 40
    assert by_name["concurrent"].extra["held_at_peak"] == 20
    assert by_name["cycling"].result.counts["cycles"] == 20
    assert len(by_name["promises"].result.latencies["question"]) == 50
    assert by_name["promises"].result.values["server p99-ms"]
    assert len(by_name["bursts"].result.latencies["ping"]) == 150
    sweep = by_name["cleanup"].extra["sweep"]
    assert sweep["ok"] and sweep["rejected"] == 100, sweep
    assert len(by_name["cleanup"].result.latencies["sweep-to-close"]) == 20


def test_worker_processes_merge_their_results(server: Any) -> None:
    report = run(tiny(server, processes=2, scenarios=["promises", "bursts"], burst_clients=2))
    assert_clean(report)
    promises = report.scenarios[0]
    assert promises.result.counts["answered"] == 50
    assert promises.result.counts["connected"] == 5


def test_soak_samples_server_memory(server: Any) -> None:
    config = tiny(server, scenarios=["soak"], duration=2.0, soak_clients=5, think=0.1,
                  server_pid=server.proc.pid, sample_interval=0.2)
    report = run(config)
    assert_clean(report)
    soak = report.scenarios[0]
    assert soak.operations > 0
    memory = soak.extra["memory"]
    assert len(memory["samples"]) >= 5
    assert memory["last_kib"] > 10_000


async def test_leak_check_sees_a_client_that_left_without_close_channel(server: Any) -> None:
    config = tiny(server, run_id="leaky")
    prefix = config.prefix("manual")
    client = SimClient(config, prefix + "1")
    await client.connect()
    await client.ping()  # the server registered it
    await client.abort()  # no close-channel: the server holds it for the reconnect grace
    leaks = await asyncio.to_thread(fetch_leaks, config, prefix)
    assert leaks["ping_records"] == 1 and leaks["clients"] == 0, leaks


def test_leak_check_without_token_is_an_error(server: Any) -> None:
    config = tiny(server, token=None)
    with pytest.raises(LeakCheckUnavailable, match="no --token"):
        fetch_leaks(config, config.prefix("x"))
    report = run(tiny(server, token=None, scenarios=["cycling"], cycles=2))
    assert not report.ok
    assert report.scenarios[0].result.errors == {"leak check unavailable": 1}


def test_command_line_runs_a_scenario(server: Any, tmp_path: Any) -> None:
    out = tmp_path / "report.json"
    env = {**server.env, "CHAT_WS_HEALTH_TOKEN": TOKEN}  # the default of --token
    done = subprocess.run(
        [sys.executable, "-m", "loadtest", "--url", server.ws_url, "--scenario", "cycling", "--cycles", "3",
         "--timeout", "10", "--no-progress", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every scenario passed with no leaks" in done.stdout
    report = json.loads(out.read_text())
    assert report["ok"] and report["scenarios"][0]["leaks"]["ping_records"] == 0


def test_command_line_options_build_the_config() -> None:
    options = parser().parse_args(
        ["--url", "ws://h:1/ws", "--scenario", "cycling", "--scenario", "all", "--cycles", "7",
         "--leaks-url", "http://h:1/l", "--token", "t", "--settings", "my.settings"]
    )  # fmt: skip
    config = config_from(options)
    assert config.scenarios == ["cycling", *[s for s in SCENARIOS if s != "cycling"]]
    assert (config.url, config.cycles, config.leaks(), config.token) == ("ws://h:1/ws", 7, "http://h:1/l", "t")
    assert config.sweep_env is not None and config.sweep_env["DJANGO_SETTINGS_MODULE"] == "my.settings"
    assert StressConfig(url="wss://h:1/ws").leaks() == "https://h:1/demo/leaks"


def test_sweep_command_batches_client_ids() -> None:
    config = StressConfig(sweep_command="{python} -m django chat_ws_sweep --json --force {clients}", sweep_batch=2)
    commands = sweep_commands(config, ["a", "b", "c"])
    assert [c[-2:] for c in commands] == [["a", "b"], ["--force", "c"]]
    assert commands[0][1:6] == ["-m", "django", "chat_ws_sweep", "--json", "--force"]
    assert StressConfig().sweep_command == config.sweep_command


def test_sweep_report_is_the_last_json_line() -> None:
    assert sweep_report('note\n{"forced": 2, "rejected": 3}\n') == {"forced": 2, "rejected": 3}
    assert sweep_report("forgot 2 client(s); 3 question(s) rejected\n") is None
    assert sweep_report("") is None


def test_a_sweep_command_without_a_json_report_fails() -> None:
    def printing(text: str) -> StressConfig:
        return StressConfig(sweep_command=shlex.join(["{python}", "-c", f"print({text!r})"]))

    outcome = run_sweep(printing("forgot 1 client(s); 0 question(s) rejected"), ["a"])
    assert not outcome.ok and "no JSON report" in outcome.output[-1]
    outcome = run_sweep(printing('{"forced": 1, "rejected": 2, "orphaned": 3}'), ["a"])
    assert outcome.ok and (outcome.forced, outcome.rejected) == (1, 5), outcome.output


def test_percentiles() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile(list(map(float, range(1, 101))), 99) == 99.0
    assert math.isnan(percentile([], 50))
    assert summarize([3.0, 1.0, 2.0]) == {"n": 3, "p50": 2.0, "p90": 3.0, "p99": 3.0, "max": 3.0}
