"""The one rule for "Redis is unreachable" and the one retry policy, shared by store and layer.

redis is imported lazily: a site without ``REDIS_URL`` runs without the package installed.
"""

from __future__ import annotations

from typing import Any

RETRY_BASE = 0.05  # seconds before the first retry of a command on a broken connection
RETRY_CAP = 1.0  # seconds between retries of one command at most
RETRY_ATTEMPTS = 4  # retries of one command before its error reaches the caller
RECONNECT_FIRST = 0.1  # seconds a long-lived reader (layer receive, settlement listener) first waits
RECONNECT_CAP = 2.0  # seconds such a reader waits between attempts at most


def _redis_errors() -> tuple[type[BaseException], ...]:
    """redis-py's own exceptions for a connection that failed or timed out."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (RedisConnectionError, RedisTimeoutError)


def network_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean Redis could not be reached (connection, timeout, socket)."""
    return (*_redis_errors(), OSError)


def is_unreachable(exc: BaseException) -> bool:
    """True when exc says Redis (or the channel layer's Redis) could not be reached."""
    if isinstance(exc, OSError):
        return True
    if not type(exc).__module__.startswith("redis"):
        return False
    return isinstance(exc, network_errors())


def retry_options() -> dict[str, Any]:
    """Connection options that retry a command after a dropped connection (redis-py ``Retry``)."""
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    return {
        "retry": Retry(ExponentialBackoff(cap=RETRY_CAP, base=RETRY_BASE), RETRY_ATTEMPTS),
        "retry_on_error": list(_redis_errors()),
    }


def reconnect_delay(failures: int) -> float:
    """Seconds a long-lived reader waits after its n-th failure in a row (0-based), doubling."""
    return float(min(RECONNECT_FIRST * 2 ** min(failures, 16), RECONNECT_CAP))
