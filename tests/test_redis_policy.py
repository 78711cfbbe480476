"""The one rule for an unreachable Redis and the one retry policy, as store and layer use them."""

from __future__ import annotations

import pytest
from redis import exceptions as redis_errors

from chat_ws import layers, redis_policy
from chat_ws.store.redis_connections import NETWORK_ERRORS


@pytest.mark.parametrize(
    "exc",
    [ConnectionRefusedError(), OSError("reset"), redis_errors.ConnectionError("x"), redis_errors.TimeoutError("x"),
     redis_errors.BusyLoadingError("loading")],
)
def test_network_failures_are_unreachable(exc: BaseException) -> None:
    assert redis_policy.is_unreachable(exc)


@pytest.mark.parametrize(
    "exc", [redis_errors.ResponseError("WRONGTYPE"), redis_errors.NoScriptError("x"), ValueError("x"), TypeError("x")]
)
def test_other_errors_are_not(exc: BaseException) -> None:
    assert not redis_policy.is_unreachable(exc)


def test_reconnect_delay_doubles_up_to_the_cap() -> None:
    delays = [redis_policy.reconnect_delay(n) for n in range(8)]
    assert delays[:3] == [0.1, 0.2, 0.4]
    assert delays == sorted(delays) and max(delays) == redis_policy.RECONNECT_CAP
    assert redis_policy.reconnect_delay(10_000) == redis_policy.RECONNECT_CAP


def test_store_and_layer_share_one_policy() -> None:
    assert NETWORK_ERRORS == redis_policy.network_errors()
    entry = layers.resilient_hosts(["redis://127.0.0.1:6379/15"])[0]
    retry = entry["retry"]
    assert retry._retries == redis_policy.RETRY_ATTEMPTS
    assert set(entry["retry_on_error"]) == {redis_errors.ConnectionError, redis_errors.TimeoutError}


@pytest.mark.redis
async def test_a_burst_past_the_layer_pool_waits_for_connections_instead_of_failing() -> None:
    import asyncio
    import secrets

    from tests.redis_util import require_redis

    prefix = f"chat_ws_test:pool:{secrets.token_hex(4)}:"
    layer = layers.RedisChannelLayer(hosts=[{"address": require_redis(), "max_connections": 2}], prefix=prefix)
    channels = [await layer.new_channel() for _ in range(40)]
    try:
        # 40 commands at once on a pool of 2: channels-redis's own pool fails with "Too many connections"
        await asyncio.gather(*(layer.group_add("g", name) for name in channels))
        await asyncio.gather(*(layer.group_discard("g", name) for name in channels))
    finally:
        await layer.flush()
