"""Finding the test Redis: a separate database number and a per-test key prefix."""

from __future__ import annotations

import os
from urllib.parse import urlparse, urlunparse

import pytest


def test_redis_url() -> str:
    """REDIS_URL (default redis://127.0.0.1:6379) with the test database number (default 15)."""
    base = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379"
    db = os.environ.get("CHAT_WS_TEST_REDIS_DB", "15")
    parts = urlparse(base)
    return urlunparse(parts._replace(path=f"/{db}"))


def require_redis() -> str:
    """Return the test Redis URL; skip (laptop) or fail (CI=true) when it does not answer."""
    import redis

    url = test_redis_url()
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        reason = f"Redis not reachable at {url}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: Redis tests must run)", pytrace=False)
        pytest.skip(reason)
    return url


def delete_prefix(url: str, prefix: str) -> None:
    """Delete the keys under one test prefix, and nothing else."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
