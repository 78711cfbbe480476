"""Prometheus metrics of this process (prometheus-client); exposed by the metrics view."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)


class _Children:
    """A labelled metric whose children are looked up once: prometheus_client's ``labels()``
    validates, takes a lock and builds a tuple on every call, on the path of every message."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        try:
            return self._children[values]
        except KeyError:
            child = self._children[values] = self._metric.labels(*values)
            return child

    def __getattr__(self, name: str) -> Any:
        return getattr(self._metric, name)


OPEN_CONNECTIONS = Gauge(
    "chat_ws_open_connections", "Websockets this process serves", registry=REGISTRY
)
MESSAGES_IN = _Children(Counter(
    "chat_ws_messages_in_total", "Frames received, by dispatch-key", ["dispatch_key"], registry=REGISTRY
))
MESSAGES_OUT = _Children(Counter(
    "chat_ws_messages_out_total", "Messages sent, by dispatch-key", ["dispatch_key"], registry=REGISTRY
))
BAD_INPUT = _Children(Counter(
    "chat_ws_bad_input_total", "Frames refused, by reason", ["reason"], registry=REGISTRY
))
QUESTIONS = _Children(Counter(
    "chat_ws_questions_total",
    "Questions by outcome: asked, answered, timeout, gone, cancelled, lost",
    ["outcome"],
    registry=REGISTRY,
))
TIME_TO_ANSWER = Histogram(
    "chat_ws_time_to_answer_seconds",
    "Seconds from asking a question to its answer",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 3600, 14400, 86400),
    registry=REGISTRY,
)
SWEEP_EVICTIONS = _Children(Counter(
    "chat_ws_sweep_evictions_total", "Clients forgotten by the sweep, by reason", ["reason"], registry=REGISTRY
))

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
