"""Settings for chat_ws: one ``CHAT_WS`` dict merged over ``DEFAULTS``.

Nothing else in chat_ws reads ``django.conf.settings`` for chat_ws keys.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # Backends
    "STORE": "chat_ws.store.memory.MemoryStore",  # dotted path; RedisStore when REDIS_URL is set
    "REDIS_URL": None,  # redis://host:port/db for the Redis store; None keeps state in memory
    "REDIS_POOL_SIZE": 50,  # redis-py connections per process and event loop (the settlement listener's pub/sub)
    "REDIS_TIMEOUT": 10.0,  # seconds a store call to Redis may take before it fails (StoreUnavailable)
    "REDIS_MAX_IN_FLIGHT": 10_000,  # commands outstanding on the pipelined connection; more wait for room
    "KEY_PREFIX": "chat_ws",  # prefix of every Redis key chat_ws writes (no braces: they tag cluster slots)
    "REDIS_CLUSTER": False,  # True: REDIS_URL is a seed node of a Redis Cluster (Redis >= 7)
    "KEY_BUCKETS": 256,  # hash-tagged buckets the store's keys fall into; fixed for a deployment's life
    "CHANNEL_LAYER": "default",  # alias in CHANNEL_LAYERS
    "SERVER_ID": None,  # name of this process in presence records; None derives host-pid-random
    # Protocol limits
    "MAX_MESSAGE_BYTES": 64 * 1024,  # bytes per incoming frame; larger frames close with 1009
    "MAX_NESTING": 32,  # levels of nested maps/vectors/sets in one incoming message
    "DEFAULT_CODEC": "edn",  # codec when the client offers no subprotocol: "edn" or "json"
    "EDN_KEYWORD_FIELDS": (),  # fields whose string values EDN writes as keywords, besides the protocol's
    "RATE_LIMIT": 30.0,  # messages per second per connection (token bucket refill rate)
    "RATE_BURST": 60,  # messages a connection may send at once before the rate applies
    "RATE_ABUSE_STRIKES": 50,  # refused messages in a row before the socket is closed (1008/4008)
    # Security
    "BIND_CLIENT_ID": True,  # bind a client-id to its first user or session; others are refused (4003)
    "BINDING_TTL": 24 * 3600,  # seconds a binding lasts after the client-id's last connection
    "MAX_CONNECTIONS_PER_USER": None,  # open sockets per authenticated user; None for no limit
    # Questions
    "QUESTION_TIMEOUT": 24 * 3600,  # seconds an ask() waits when called with timeout=None
    "RECONNECT_GRACE": 60,  # seconds pending questions survive a dropped connection
    "MAX_PENDING_PER_CLIENT": 100,  # pending questions one client may have at once
    "SETTLE_WAIT": 5,  # seconds an asker waits for a settlement already under way elsewhere
    "QUESTION_CHECK_INTERVAL": 30,  # seconds between an asker's checks that its question still exists
    "ANSWER_CONSUME_TIMEOUT": 30,  # seconds a journaled answer may wait for its asker's next step before
    # the sweep hands it to answer_orphaned (again every as many seconds until it is consumed)
    # Liveness
    "PING_INTERVAL": 30,  # seconds between browser pings (told to the browser client)
    "INACTIVITY_TIMEOUT": 600,  # seconds of silence before the sweep sends alive?
    "ALIVE_RESPONSE_TIMEOUT": 30,  # seconds a client has to answer alive?
    "SESSION_RETENTION": 3600,  # seconds presence remembers a closed connection
    # Application
    "HANDLER_MODULES": [],  # modules imported at start-up so their @handler functions register
    # Sweep and operations
    "SWEEP_INTERVAL": 60,  # seconds between sweeps of `chat_ws_sweep --loop` and the Celery beat entry
    "SWEEP_LOCK_TTL": 60,  # seconds one sweep holds the sweep lock at most (crashed sweepers release it)
    "SWEEP_BATCH": 1000,  # clients or questions per sweep step and pass; a larger backlog waits a pass
    "HEALTH_TOKEN": None,  # bearer token that unlocks health counts and metrics; None: staff only
    "HEALTH_TIMEOUT": 2.0,  # seconds each health probe (store, channel layer) may take
    "HEALTH_REQUIRE_SWEEP": False,  # True: unhealthy when no sweep ran within 3 x SWEEP_INTERVAL
    "SHUTDOWN_TIMEOUT": 5.0,  # seconds SIGTERM waits for this process's sockets to close before the server stops
}


@lru_cache(maxsize=None)
def get_settings() -> dict[str, Any]:
    """Return DEFAULTS overridden by the user's ``CHAT_WS`` dict."""
    user = getattr(settings, "CHAT_WS", {}) or {}
    merged = dict(DEFAULTS)
    merged.update(user)
    merged["EDN_KEYWORD_FIELDS"] = frozenset(merged["EDN_KEYWORD_FIELDS"])
    if "STORE" not in user and merged.get("REDIS_URL"):
        merged["STORE"] = "chat_ws.store.redis.RedisStore"
    return merged


def setting(name: str) -> Any:
    """Return one chat_ws setting."""
    return get_settings()[name]


@receiver(setting_changed)
def _reset_settings(*, setting: str, **kwargs: Any) -> None:
    if setting == "CHAT_WS":
        get_settings.cache_clear()
