"""health(), the health endpoint and the metrics endpoint."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from chat_ws import api, sweeper
from chat_ws import sweep as sweeping
from chat_ws.health import health
from tests.comm import Comm
from tests.conftest import chat_ws_settings

pytestmark = pytest.mark.django_db(transaction=True)

UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1
HEALTH = "/chat_ws/health/"
METRICS = "/chat_ws/metrics/"
OLD_METRICS = "/chat_ws/metrics"  # before the trailing slash; still served for existing scrapers
TOKEN = "s3cret-token"
PUBLIC_KEYS = {"healthy", "store", "channel_layer"}


def unreachable(settings: Any) -> None:
    chat_ws_settings(settings, REDIS_URL=UNREACHABLE, STORE="chat_ws.store.redis.RedisStore")


@pytest.fixture
def staff(client: Any) -> Any:
    user = get_user_model().objects.create_user("op", password="pw", is_staff=True)
    client.force_login(user)
    return client


# ---------------------------------------------------------------------- the service
async def test_counts_clients_questions_and_sweeps(store: Any) -> None:
    present = await Comm().connect()
    away = await Comm().connect()
    task = asyncio.create_task(api.ask(present.client_id, {"dispatch-key": "iviewr-says", "text": "Q?"}))
    await present.recv()
    await away.disconnect()
    asked_at = (await store.pending())[0].asked_at

    report = await health(now=asked_at + 42)
    assert report.healthy and report.store and report.channel_layer
    assert (report.active_clients, report.disconnected_clients, report.ping_records) == (1, 1, 2)
    assert report.pending_questions == 1
    assert report.oldest_question_age == pytest.approx(42, abs=1e-3)
    assert report.last_sweep_at is None and report.sweep_overdue and not report.sweeper_running
    assert report.local_sockets == 1 and report.waiting_askers == 1 and report.grace_timers == 1

    await sweeping.sweep(now=asked_at + 1)
    await sweeper.heartbeat(60, "loop")
    report = await health(now=asked_at + 11)
    assert report.last_sweep_at == asked_at + 1 and report.last_sweep_age == pytest.approx(10)
    assert report.last_sweep is not None and "alive_sent" in report.last_sweep
    assert report.sweeper_running and not report.sweep_overdue
    assert report.as_dict(counts=False) == {"healthy": True, "store": True, "channel_layer": True}
    task.cancel()
    await present.disconnect()


async def test_reports_each_redis_node_and_layer_host(store: Any, backend: str) -> None:
    clients = [await Comm().connect() for _ in range(12)]
    report = await health()
    if backend == "memory":
        assert report.store_nodes is None and report.layer_hosts is None
    else:
        nodes = report.store_nodes or []
        assert len(nodes) == (3 if backend == "cluster" else 1)
        assert sum(n["keys"] for n in nodes) > 0
        assert all(n["commands"] > 0 and ":" in n["node"] for n in nodes)
        assert report.layer_hosts == (2 if backend == "cluster" else 1)
    for client in clients:
        await client.disconnect()


async def test_an_unreachable_store_is_unhealthy_not_an_exception(settings: Any, backend: str) -> None:
    unreachable(settings)
    report = await api.health()
    assert not report.healthy and not report.store
    assert report.active_clients is None and report.pending_questions is None
    assert any(p.startswith("store:") for p in report.problems)


async def test_sweep_can_be_required(settings: Any, backend: str) -> None:
    chat_ws_settings(settings, HEALTH_REQUIRE_SWEEP=True, SWEEP_INTERVAL=10)
    now = time.time()
    report = await health(now=now)
    assert not report.healthy and report.store and report.problems == ["no sweep within 30s"]
    await sweeping.sweep(now=now)
    assert (await health(now=now + 29)).healthy
    assert not (await health(now=now + 31)).healthy


def test_sync_twin(backend: str) -> None:
    report = api.health_sync()
    assert report.healthy
    assert "health" in api.__all__ and "health_sync" in api.__all__


# ---------------------------------------------------------------------- the endpoint
def test_anonymous_gets_the_verdict_only(client: Any) -> None:
    response = client.get(HEALTH)
    assert response.status_code == 200
    assert response.json() == {"healthy": True, "store": True, "channel_layer": True}
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


def test_staff_get_the_counts(staff: Any) -> None:
    body = staff.get(HEALTH).json()
    assert set(body) > PUBLIC_KEYS
    assert body["active_clients"] == 0 and body["pending_questions"] == 0


def test_non_staff_users_get_the_verdict_only(client: Any) -> None:
    client.force_login(get_user_model().objects.create_user("someone", password="pw"))
    assert set(client.get(HEALTH).json()) == PUBLIC_KEYS


def test_token_unlocks_the_counts(settings: Any, client: Any) -> None:
    chat_ws_settings(settings, HEALTH_TOKEN=TOKEN)
    assert "active_clients" in client.get(HEALTH, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").json()
    assert "active_clients" in client.get(HEALTH, {"token": TOKEN}).json()
    assert set(client.get(HEALTH, HTTP_AUTHORIZATION="Bearer wrong").json()) == PUBLIC_KEYS
    assert set(client.get(HEALTH, {"token": "wrong"}).json()) == PUBLIC_KEYS


def test_no_token_configured_means_no_token_works(client: Any) -> None:
    assert set(client.get(HEALTH, HTTP_AUTHORIZATION="Bearer None").json()) == PUBLIC_KEYS
    assert set(client.get(HEALTH, {"token": ""}).json()) == PUBLIC_KEYS


def test_unhealthy_is_503(settings: Any, client: Any) -> None:
    unreachable(settings)
    response = client.get(HEALTH)
    assert response.status_code == 503
    assert response.json() == {"healthy": False, "store": False, "channel_layer": True}


def test_only_get(client: Any) -> None:
    assert client.post(HEALTH).status_code == 405


async def test_endpoint_on_both_backends(async_client: Any, backend: str) -> None:
    client = await Comm().connect()
    response = await async_client.get(HEALTH, HTTP_AUTHORIZATION="Bearer nope")
    assert response.status_code == 200 and response.json()["healthy"] is True
    await client.disconnect()


# ---------------------------------------------------------------------- metrics
def test_metrics_need_staff_or_token(settings: Any, client: Any) -> None:
    assert client.get(METRICS).status_code == 403
    client.force_login(get_user_model().objects.create_user("someone", password="pw"))
    assert client.get(METRICS).status_code == 403
    chat_ws_settings(settings, HEALTH_TOKEN=TOKEN)
    assert client.get(METRICS, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_metrics_in_prometheus_text_format(staff: Any) -> None:
    from chat_ws import metrics

    metrics.SWEEP_EVICTIONS.labels("inactive").inc(0)
    response = staff.get(METRICS)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    text = response.content.decode()
    for name in (
        "chat_ws_open_connections",
        "chat_ws_messages_in_total",
        "chat_ws_questions_total",
        "chat_ws_time_to_answer_seconds_bucket",
        "chat_ws_sweep_evictions_total",
    ):
        assert f"# TYPE {name.removesuffix('_bucket').removesuffix('_total')}" in text, name
    assert 'chat_ws_sweep_evictions_total{reason="inactive"}' in text


def test_both_endpoints_end_with_a_slash() -> None:
    from django.urls import reverse

    assert reverse("chat_ws:health") == HEALTH
    assert reverse("chat_ws:metrics") == METRICS


def test_the_old_metrics_path_is_served_not_redirected(settings: Any, client: Any) -> None:
    assert client.get(OLD_METRICS).status_code == 403
    chat_ws_settings(settings, HEALTH_TOKEN=TOKEN)
    response = client.get(OLD_METRICS, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert "# TYPE chat_ws_open_connections gauge" in response.content.decode()


async def test_a_probe_without_counts_still_judges(store: Any) -> None:
    client = await Comm().connect()
    report = await health(counts=False)
    assert report.healthy and report.store and report.channel_layer
    assert report.active_clients is None and report.pending_questions is None
    await client.disconnect()


def test_a_stopping_process_is_unhealthy(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """After SIGTERM a process refuses new sockets: a load balancer should stop sending them."""
    from chat_ws.runtime import runtime

    monkeypatch.setattr(runtime(), "stopping", True)
    response = client.get(HEALTH)
    assert response.status_code == 503
    assert response.json() == {"healthy": False, "store": True, "channel_layer": True}


async def test_the_report_says_the_process_is_stopping(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from chat_ws.runtime import runtime

    monkeypatch.setattr(runtime(), "stopping", True)
    report = await health()
    assert report.stopping and not report.healthy
    assert "this process is stopping (graceful shutdown)" in report.problems
