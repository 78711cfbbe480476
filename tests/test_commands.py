"""chat_ws_sweep and chat_ws_health, in process and as real processes; the Celery task."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from chat_ws import sweep as sweeping
from chat_ws import sweeper
from chat_ws.sweeper import run_sync
from chat_ws.exceptions import WS_4002_FORGOTTEN
from chat_ws.store import get_store
from tests.conftest import chat_ws_settings
from tests.live import ROOT, base_env
from tests.wsclient import WsClient

pytestmark = pytest.mark.django_db(transaction=True)

UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1
PROCESS_TIMEOUT = 60  # seconds a command process may take


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def stale_client(client_id: str, *, alive_sent_ago: float | None = None) -> None:
    """A presence record silent for long, optionally already sent alive? that long ago."""
    store = get_store()
    now = time.time()

    async def setup() -> None:
        await store.open_connection(client_id, "srv-x", f"chan-{client_id}", now - 10_000)
        if alive_sent_ago is not None:
            await store.mark_alive_sent(client_id, now - alive_sent_ago)

    run_sync(setup)


def connection(client_id: str) -> Any:
    store = get_store()
    return run_sync(lambda: store.connection(client_id))


# ---------------------------------------------------------------------- chat_ws_sweep in process
def test_sweep_prints_counts(backend: str) -> None:
    stale_client("c1")
    stale_client("c2", alive_sent_ago=60)
    assert run("chat_ws_sweep").strip() == "swept: 1 alive sent, 1 inactive"
    assert connection("c1").alive_sent_at is not None
    assert connection("c2") is None
    assert run("chat_ws_sweep").strip() == "swept: 1 awaiting"


def test_dry_run_prints_and_changes_nothing(backend: str) -> None:
    stale_client("c1", alive_sent_ago=60)
    assert run("chat_ws_sweep", "--dry-run").strip() == "dry run, would do: 1 inactive"
    assert connection("c1") is not None


def test_wait_sends_alive_waits_out_the_window_then_forgets(settings: Any, backend: str) -> None:
    chat_ws_settings(settings, ALIVE_RESPONSE_TIMEOUT=0.2)
    stale_client("c1")
    output = run("chat_ws_sweep", "--wait")
    assert "sent 1 alive?; waiting 0.2s for answers" in output
    assert output.splitlines()[-1] == "swept: 1 alive sent, 1 inactive"
    assert connection("c1") is None


def test_force_and_force_all(backend: str) -> None:
    for client_id in ("c1", "c2", "c3"):
        stale_client(client_id)
    assert run("chat_ws_sweep", "--force", "c1", "nobody").strip() == "forgot 1 client(s); 0 question(s) rejected"
    assert connection("c1") is None and connection("c2") is not None
    assert run("chat_ws_sweep", "--force-all").strip() == "forgot 2 client(s); 0 question(s) rejected"
    assert connection("c2") is None and connection("c3") is None


def test_json_prints_the_report_as_one_line(backend: str) -> None:
    stale_client("c1")
    stale_client("c2", alive_sent_ago=60)
    output = run("chat_ws_sweep", "--json")
    assert len(output.splitlines()) == 1
    report = json.loads(output)
    assert set(report) == set(sweeping.SweepReport().as_dict())
    assert (report["alive_sent"], report["inactive"], report["dry_run"]) == (1, 1, False)
    assert json.loads(run("chat_ws_sweep", "--json", "--dry-run"))["dry_run"] is True


def test_json_with_force_counts_forgotten_clients(backend: str) -> None:
    stale_client("c1")
    stale_client("c2")
    report = json.loads(run("chat_ws_sweep", "--json", "--force", "c1", "nobody"))
    assert (report["forced"], report["rejected"], report["orphaned"]) == (1, 0, 0)
    assert connection("c1") is None and connection("c2") is not None


def test_json_with_wait_keeps_stdout_to_the_report(settings: Any, backend: str) -> None:
    chat_ws_settings(settings, ALIVE_RESPONSE_TIMEOUT=0.2)
    stale_client("c1")
    out, err = StringIO(), StringIO()
    call_command("chat_ws_sweep", "--json", "--wait", stdout=out, stderr=err)
    assert json.loads(out.getvalue())["inactive"] == 1
    assert "sent 1 alive?" in err.getvalue()


def test_modes_exclude_each_other(backend: str) -> None:
    with pytest.raises(CommandError):
        call_command("chat_ws_sweep", "--dry-run", "--loop")
    with pytest.raises(CommandError, match="--interval goes with --loop"):
        call_command("chat_ws_sweep", "--interval", "5")
    with pytest.raises(CommandError, match="--json does not go with --loop"):
        call_command("chat_ws_sweep", "--json", "--loop")


def test_unreachable_store_is_an_error(settings: Any, backend: str) -> None:
    chat_ws_settings(settings, REDIS_URL=UNREACHABLE, STORE="chat_ws.store.redis.RedisStore")
    with pytest.raises(CommandError, match="cannot sweep"):
        call_command("chat_ws_sweep")


# ---------------------------------------------------------------------- chat_ws_health in process
def test_health_prints_the_report(backend: str) -> None:
    stale_client("c1")
    report = json.loads(run("chat_ws_health"))
    assert report["healthy"] is True
    assert report["active_clients"] == 1 and report["ping_records"] == 1


def test_health_fails_when_unhealthy(settings: Any, backend: str) -> None:
    chat_ws_settings(settings, REDIS_URL=UNREACHABLE, STORE="chat_ws.store.redis.RedisStore")
    out = StringIO()
    with pytest.raises(CommandError) as failure:
        call_command("chat_ws_health", stdout=out)
    assert failure.value.returncode == 1
    assert json.loads(out.getvalue())["store"] is False


# ---------------------------------------------------------------------- chat_ws_ask in process
IN_MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def test_ask_refuses_the_in_memory_store(settings: Any) -> None:
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    chat_ws_settings(settings, REDIS_URL=None, STORE="chat_ws.store.memory.MemoryStore")
    with pytest.raises(CommandError, match=r"store is in memory.*shared Redis: set REDIS_URL in CHAT_WS"):
        call_command("chat_ws_ask", "client-a", "Hello?", "--timeout", "5")
    assert run_sync(lambda: get_store().pending()) == []  # asked nobody


def test_ask_refuses_an_in_memory_channel_layer(settings: Any, redis_url: str, key_prefix: str) -> None:
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    chat_ws_settings(settings, REDIS_URL=redis_url, KEY_PREFIX=key_prefix)
    with pytest.raises(CommandError, match=r"channel layer is in memory.*channels_redis layer in CHANNEL_LAYERS"):
        call_command("chat_ws_ask", "client-a", "Hello?", "--timeout", "5")


# ---------------------------------------------------------------------- Celery
def test_celery_task_runs_the_sweep(backend: str) -> None:
    from chat_ws import tasks

    stale_client("c1", alive_sent_ago=60)
    result = tasks.sweep.apply()
    assert result.successful()
    assert result.get()["inactive"] == 1
    assert connection("c1") is None
    beat = run_sync(sweeper.sweeper)
    assert beat is not None and beat["source"] == "celery"
    assert run_sync(sweeping.last_sweep)["inactive"] == 1


def test_celery_task_dry_run_and_clock(backend: str) -> None:
    from chat_ws import tasks

    stale_client("c1")
    result = tasks.sweep.apply(kwargs={"dry_run": True, "now": time.time()})
    assert result.get()["alive_sent"] == 1 and result.get()["dry_run"] is True
    assert connection("c1").alive_sent_at is None
    assert run_sync(sweeper.sweeper) is None  # a dry run is not a sweeper


def test_beat_schedule_follows_the_interval(settings: Any, backend: str) -> None:
    from chat_ws import tasks

    chat_ws_settings(settings, SWEEP_INTERVAL=15)
    entry = tasks.beat_schedule()["chat-ws-sweep"]
    assert entry == {"task": "chat_ws.tasks.sweep", "schedule": 15.0, "options": {"expires": 15.0}}
    assert tasks.sweep.name == entry["task"]


# ---------------------------------------------------------------------- real processes
def manage(live_db: Any, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=base_env(live_db.path, None, "unused", LOG_LEVEL="WARNING", **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_exit_code_is_nonzero_when_redis_is_unreachable(live_db: Any) -> None:
    for command in ("chat_ws_sweep", "chat_ws_health"):
        proc = manage(live_db, command, REDIS_URL=UNREACHABLE)
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
        assert proc.returncode == 1, (command, out, err)
        assert "unreachable" in err
    assert json.loads(out)["store"] is False  # the health report is printed all the same


def test_loop_stops_cleanly_on_sigterm(live_db: Any) -> None:
    proc = manage(live_db, "chat_ws_sweep", "--loop", "--interval", "60")
    try:
        with ThreadPoolExecutor(1) as pool:
            assert proc.stdout is not None
            assert "sweeping every 60s" in pool.submit(proc.stdout.readline).result(PROCESS_TIMEOUT)
            assert pool.submit(proc.stdout.readline).result(PROCESS_TIMEOUT).startswith("swept:")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "sweeper stopped after 1 pass(es)" in out


@pytest.mark.integration
async def test_force_closes_a_live_socket_on_daphne(live_servers: Any) -> None:
    server = live_servers(redis=True)
    async with WsClient(server.ws_url) as client:
        await client.send({"dispatch-key": "ping", "ping-id": 1})
        assert (await client.recv_until("ping-confirm"))["ping-id"] == 1  # registered
        done = await asyncio.to_thread(server.manage, "chat_ws_sweep", "--force", client.client_id)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "forgot 1 client(s); 0 question(s) rejected"
        assert await client.closed() == WS_4002_FORGOTTEN
