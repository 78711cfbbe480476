"""Prometheus metrics of this process (prometheus-client); exposed by the metrics view."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

OPEN_CONNECTIONS = Gauge(
    "chat_ws_open_connections", "Websockets this process serves", registry=REGISTRY
)
MESSAGES_IN = Counter(
    "chat_ws_messages_in_total", "Frames received, by dispatch-key", ["dispatch_key"], registry=REGISTRY
)
MESSAGES_OUT = Counter(
    "chat_ws_messages_out_total", "Messages sent, by dispatch-key", ["dispatch_key"], registry=REGISTRY
)
BAD_INPUT = Counter(
    "chat_ws_bad_input_total", "Frames refused, by reason", ["reason"], registry=REGISTRY
)
QUESTIONS = Counter(
    "chat_ws_questions_total",
    "Questions by outcome: asked, answered, timeout, gone, cancelled, lost",
    ["outcome"],
    registry=REGISTRY,
)
TIME_TO_ANSWER = Histogram(
    "chat_ws_time_to_answer_seconds",
    "Seconds from asking a question to its answer",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 3600, 14400, 86400),
    registry=REGISTRY,
)
SWEEP_EVICTIONS = Counter(
    "chat_ws_sweep_evictions_total", "Clients forgotten by the sweep, by reason", ["reason"], registry=REGISTRY
)

KNOWN_KEYS = 256  # distinct dispatch-key labels kept before others count as "other"
_seen_keys: set[str] = set()


def key_label(key: str) -> str:
    """Bound label cardinality: unknown keys from the wire must not grow the registry forever."""
    if key in _seen_keys:
        return key
    if len(_seen_keys) < KNOWN_KEYS:
        _seen_keys.add(key)
        return key
    return "other"
