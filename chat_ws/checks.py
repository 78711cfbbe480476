"""System checks of chat_ws's configuration."""

from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from django.core.checks import Error, Warning, register

from chat_ws.conf import DEFAULTS, get_settings


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Unknown keys, bad limits, and a missing channel layer."""
    problems: list[Any] = []
    conf = get_settings()
    user = getattr(settings, "CHAT_WS", {}) or {}
    for key in sorted(set(user) - set(DEFAULTS)):
        problems.append(
            Warning(
                f"Unknown CHAT_WS setting {key!r}.",
                hint=f"Known settings: {', '.join(sorted(DEFAULTS))}.",
                id="chat_ws.W001",
            )
        )
    positive = (
        "MAX_MESSAGE_BYTES", "MAX_NESTING", "MAX_PENDING_PER_CLIENT", "QUESTION_TIMEOUT", "RECONNECT_GRACE",
        "RATE_LIMIT", "RATE_BURST", "RATE_ABUSE_STRIKES", "QUESTION_CHECK_INTERVAL", "SETTLE_WAIT",
        "INACTIVITY_TIMEOUT", "ALIVE_RESPONSE_TIMEOUT", "SWEEP_INTERVAL", "SWEEP_LOCK_TTL", "SWEEP_BATCH",
        "HEALTH_TIMEOUT", "BINDING_TTL", "REDIS_POOL_SIZE", "REDIS_TIMEOUT", "REDIS_MAX_IN_FLIGHT",
        "SHUTDOWN_TIMEOUT",
    )
    for key in positive:
        value = conf[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            problems.append(
                Error(f"CHAT_WS[{key!r}] must be a positive number.", hint=f"Default: {DEFAULTS[key]}.", id="chat_ws.E002")
            )
    token = conf["HEALTH_TOKEN"]
    if token is not None and (not isinstance(token, str) or not token):
        problems.append(
            Error("CHAT_WS['HEALTH_TOKEN'] must be None or a non-empty string.", id="chat_ws.E006")
        )
    limit = conf["MAX_CONNECTIONS_PER_USER"]
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0):
        problems.append(
            Error("CHAT_WS['MAX_CONNECTIONS_PER_USER'] must be None or a positive integer.", id="chat_ws.E007")
        )
    if conf["DEFAULT_CODEC"] not in ("edn", "json"):
        problems.append(Error("CHAT_WS['DEFAULT_CODEC'] must be 'edn' or 'json'.", id="chat_ws.E003"))
    fields = user.get("EDN_KEYWORD_FIELDS", ())
    if isinstance(fields, str) or not all(isinstance(f, str) and f for f in fields):
        problems.append(
            Error(
                "CHAT_WS['EDN_KEYWORD_FIELDS'] must be a list of field names.",
                hint='For example ["conversation-id"]; a bare string would be read letter by letter.',
                id="chat_ws.E009",
            )
        )
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    if conf["CHANNEL_LAYER"] not in layers:
        problems.append(
            Error(
                f"No channel layer named {conf['CHANNEL_LAYER']!r} in CHANNEL_LAYERS.",
                hint="chat_ws delivers messages through a channel layer; configure channels_redis "
                "(several processes) or InMemoryChannelLayer (one process).",
                id="chat_ws.E001",
            )
        )
    if conf["STORE"].endswith("RedisStore") and not conf.get("REDIS_URL"):
        problems.append(
            Error("The Redis store needs CHAT_WS['REDIS_URL'].", hint="Set REDIS_URL.", id="chat_ws.E004")
        )
    problems.extend(check_key_layout(conf))
    layer = layers.get(conf["CHANNEL_LAYER"]) or {}
    if layer.get("BACKEND") == "channels_redis.core.RedisChannelLayer" and len(_layer_hosts(layer)) > 1:
        problems.append(
            Warning(
                "channels-redis's RedisChannelLayer with several hosts sends messages for a socket's "
                "channel to one host and reads them from another (django/channels#1492).",
                hint="Use chat_ws.layers.RedisChannelLayer, which shards them consistently; switch every process at once.",
                id="chat_ws.W002",
            )
        )
    if conf["REDIS_CLUSTER"] and conf["CHANNEL_LAYER"] in layers:
        problems.extend(check_cluster_layer(conf, layers[conf["CHANNEL_LAYER"]]))
    problems.extend(check_handler_modules(conf["HANDLER_MODULES"]))
    return problems


def check_key_layout(conf: dict[str, Any]) -> list[Any]:
    """KEY_PREFIX without hash-tag braces (chat_ws.E011); KEY_BUCKETS a positive integer (E012)."""
    problems: list[Any] = []
    prefix = conf["KEY_PREFIX"]
    if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
        problems.append(
            Error(
                "CHAT_WS['KEY_PREFIX'] must be a non-empty string without '{' or '}'.",
                hint="The store puts each key bucket in braces ('chat_ws:{17}:...') to keep it in one cluster slot.",
                id="chat_ws.E011",
            )
        )
    buckets = conf["KEY_BUCKETS"]
    if not isinstance(buckets, int) or isinstance(buckets, bool) or not 1 <= buckets <= 16384:
        problems.append(
            Error("CHAT_WS['KEY_BUCKETS'] must be an integer from 1 to 16384.", hint="Default: 256.", id="chat_ws.E012")
        )
    return problems


def _layer_hosts(layer: dict[str, Any]) -> list[Any]:
    """The hosts entries of a channel layer's CONFIG (URLs or channels-redis host dicts)."""
    return list((layer.get("CONFIG") or {}).get("hosts") or [])


def check_cluster_layer(conf: dict[str, Any], layer: dict[str, Any]) -> list[Any]:
    """With REDIS_CLUSTER, the channel layer needs Redis servers of its own (chat_ws.E010):
    channels-redis shards over standalone servers and does not support Redis Cluster, and the
    in-memory layer serves one process."""
    backend = str(layer.get("BACKEND", ""))
    hint = (
        "Give the layer standalone Redis servers to shard over: CHANNEL_LAYERS[...]['CONFIG']['hosts'] "
        "(the demo reads them from CHANNEL_LAYER_URLS), with chat_ws.layers.RedisChannelLayer."
    )
    if "InMemoryChannelLayer" in backend:
        return [
            Error(
                "With CHAT_WS['REDIS_CLUSTER'] the store serves several processes, but the channel "
                "layer is in memory (one process).",
                hint=hint,
                id="chat_ws.E010",
            )
        ]
    from chat_ws.store.resp import Address

    seed = Address(conf["REDIS_URL"]) if conf.get("REDIS_URL") else None
    for host in _layer_hosts(layer):
        url = host.get("address") if isinstance(host, dict) else host
        if not isinstance(url, str) or seed is None:
            continue
        try:
            address = Address(url)
        except Exception:  # not a URL this check understands: channels-redis will say
            continue
        if (address.host, address.port) == (seed.host, seed.port):
            return [
                Error(
                    f"The channel layer uses the Redis Cluster node {url}; channels-redis does not "
                    "support Redis Cluster.",
                    hint=hint,
                    id="chat_ws.E010",
                )
            ]
    return []


def check_handler_modules(modules: Any) -> list[Any]:
    """Each entry of HANDLER_MODULES names a module that imports (chat_ws.E008)."""
    from django.apps import apps

    from chat_ws.apps import ChatWsConfig, module_missing

    if not isinstance(modules, (list, tuple)) or not all(isinstance(m, str) and m for m in modules):
        return [
            Error(
                "CHAT_WS['HANDLER_MODULES'] must be a list of dotted module paths.",
                hint="Write a list, even for one module: ['myapp.chat_handlers'].",
                id="chat_ws.E008",
            )
        ]
    config = cast(ChatWsConfig, apps.get_app_config("chat_ws"))
    problems: list[Any] = []
    for name in modules:
        exc = config.import_handler_module(name)
        if exc is None:
            continue
        if module_missing(name, exc):
            problems.append(
                Error(
                    f"CHAT_WS['HANDLER_MODULES'] names {name!r}, which cannot be found ({exc}).",
                    hint="Each entry is the dotted path of an importable module holding @handler "
                    "functions, e.g. 'myapp.chat_handlers'; check the spelling and that its app is installed.",
                    id="chat_ws.E008",
                )
            )
        else:
            problems.append(
                Error(
                    f"Handler module {name!r} failed to import: {type(exc).__name__}: {exc}",
                    hint=f"Fix the error in {name!r}; the log of logger 'chat_ws.apps' has its traceback.",
                    id="chat_ws.E008",
                )
            )
    return problems


@register("database")
def check_redis(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Whether the Redis store answers (run by `migrate` and `check --database default`)."""
    conf = get_settings()
    url = conf.get("REDIS_URL")
    if not url or not conf["STORE"].endswith("RedisStore"):
        return []
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except Exception as exc:
        return [
            Error(
                f"Redis at {url} is unreachable: {exc}",
                hint="Start Redis or fix CHAT_WS['REDIS_URL']; without it no question can be asked.",
                id="chat_ws.E005",
            )
        ]
    return []
