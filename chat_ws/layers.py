"""A channels-redis layer whose receive() rides out a Redis restart instead of ending the consumer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels_redis.core import RedisChannelLayer as _RedisChannelLayer
from channels_redis.utils import decode_hosts
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

RETRY_FIRST = 0.1  # seconds before the first retry
RETRY_CAP = 5.0  # seconds between retries at most


POOL_SIZE = 1000  # connections per host and event loop (redis-py's default of 100 breaks at 500 clients)


def resilient_hosts(hosts: Any) -> list[dict[str, Any]]:
    """channels-redis host entries with retries on connection errors and a larger pool."""
    entries = []
    for entry in decode_hosts(hosts):
        entry = dict(entry)
        entry.setdefault("retry", Retry(ExponentialBackoff(cap=1.0, base=0.05), 4))
        entry.setdefault("retry_on_error", [RedisConnectionError, RedisTimeoutError])
        entry.setdefault("max_connections", POOL_SIZE)
        entries.append(entry)
    return entries


class RedisChannelLayer(_RedisChannelLayer):
    """channels_redis.core.RedisChannelLayer that survives a Redis restart.

    Stale pooled connections are retried instead of failing the first command after a restart,
    and receive() waits for Redis to come back: without this, channels ends every consumer whose
    receive() raised, closing every socket of the process. Messages sent while Redis was down
    are lost, as with any non-persistent Redis.
    """

    def __init__(self, hosts: Any = None, **kwargs: Any) -> None:
        super().__init__(hosts=resilient_hosts(hosts), **kwargs)

    async def receive(self, channel: str) -> Any:
        delay = RETRY_FIRST
        while True:
            try:
                return await super().receive(channel)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                logger.warning("channel layer receive failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP)
