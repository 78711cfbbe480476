"""channels-redis with the shared retry policy and a pool that waits in a burst.

Riding out a Redis restart in receive() is ChatConsumer's job (it retries any layer's receive with
the shared backoff), so this layer does not repeat it.
"""

from __future__ import annotations

from typing import Any

from channels_redis.core import RedisChannelLayer as _RedisChannelLayer
from channels_redis.utils import decode_hosts

from chat_ws.redis_policy import retry_options

POOL_SIZE = 1000  # connections per host and event loop (redis-py's default of 100 breaks at 500 clients)
POOL_TIMEOUT = 10.0  # seconds a command waits for a free pooled connection before it fails


def resilient_hosts(hosts: Any) -> list[dict[str, Any]]:
    """channels-redis host entries with retries on connection errors and a larger pool."""
    entries = []
    for entry in decode_hosts(hosts):
        entry = dict(entry)
        for option, value in retry_options().items():
            entry.setdefault(option, value)
        entry.setdefault("max_connections", POOL_SIZE)
        entries.append(entry)
    return entries


class RedisChannelLayer(_RedisChannelLayer):
    """channels_redis.core.RedisChannelLayer that survives a Redis restart.

    Stale pooled connections are retried instead of failing the first command after a restart, and
    a burst of commands waits for a free pooled connection. Messages sent while Redis was down are
    lost, as with any non-persistent Redis.
    """

    def __init__(self, hosts: Any = None, **kwargs: Any) -> None:
        super().__init__(hosts=resilient_hosts(hosts), **kwargs)

    def create_pool(self, index: int) -> Any:
        """A pool that makes a command wait for a free connection when all POOL_SIZE are busy
        (a burst of connects), where channels-redis's own pool fails it: 'Too many connections'."""
        host = dict(self.hosts[index])
        if "address" not in host:
            return super().create_pool(index)
        from redis.asyncio import BlockingConnectionPool

        return BlockingConnectionPool.from_url(host.pop("address"), timeout=POOL_TIMEOUT, **host)
