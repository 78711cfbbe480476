"""The chaos scenario, short: 2 servers, 40 interviewing clients, 20 s of faults, zero violations.

The same orchestration as ``make chaos`` (loadtest.chaos.run) with its faults scaled down: a
SIGKILL every 4 s, one SIGTERM, one Redis restart, socket cuts every 5 s. It starts its own
redis-server and PostgreSQL database, so it runs once, not under each ASGI server.
"""

from __future__ import annotations

import os

import pytest

from loadtest.chaos import ChaosConfig, run
from loadtest.chaos_env import POSTGRES_ADMIN
from loadtest.ledger import render
from tests.redis_util import require_redis_server

pytestmark = [pytest.mark.integration, pytest.mark.redis]


def require_postgres() -> None:
    """Skip (laptop) or fail (CI=true) when the local PostgreSQL does not answer."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN + "/postgres", connect_timeout=3):
            pass
    except Exception as exc:
        reason = f"PostgreSQL not reachable at {POSTGRES_ADMIN}: {type(exc).__name__}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: the chaos test must run)", pytrace=False)
        pytest.skip(reason)


@pytest.mark.timeout(150)
def test_chaos_smoke_has_no_violations(tmp_path: object) -> None:
    require_redis_server()
    require_postgres()
    config = ChaosConfig(
        servers=2,
        clients=40,
        duration=20,
        kill_every=4,
        term_every=15,
        redis_restart_every=10,
        cut_every=5,
        settle=30,
        stall=15,
        keep_logs=str(tmp_path) + "/logs",
    )
    result = run(config)
    stats = result.ledger.stats
    summary = f"run {result.run_id} seed {result.seed}, {result.seconds:.0f}s, logs in {result.logs}\n"
    assert result.database == "postgresql", summary + "\n".join(result.notes)
    assert stats["kills"] >= 3 and stats["graceful_stops"] == 1 and stats["redis_restarts"] == 1, summary
    assert stats["sockets_cut"] >= 2 and stats["interviews_finished"] >= 40, summary + render(result.ledger)
    assert result.ok, summary + render(result.ledger)
