"""Prometheus metrics of this process (prometheus-client); exposed by the metrics view."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric

REGISTRY = CollectorRegistry(auto_describe=True)


class _Cell:
    """One labelled count; ``inc()`` is a plain addition (no lock: see LabelledCounter)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class LabelledCounter:
    """A counter with one label, counted in plain attributes and exposed through a collector.

    prometheus_client's own counters validate labels, take a lock and build a tuple on every
    ``labels().inc()``: a few microseconds on the path of every message. Counts here are plain
    additions on the event loop's thread; a sync handler counting from a worker thread at the
    very same moment could lose an increment, which a monitoring counter can afford.
    """

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self._cells: dict[str, _Cell] = {}

    def labels(self, value: str) -> _Cell:
        cell = self._cells.get(value)
        if cell is None:
            cell = self._cells.setdefault(value, _Cell())
        return cell

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, cell in list(self._cells.items()):
            family.add_metric([value], cell.value)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=[self.label])


def _counter(name: str, documentation: str, label: str) -> LabelledCounter:
    counter = LabelledCounter(name, documentation, label)
    REGISTRY.register(counter)  # type: ignore[arg-type]
    return counter


OPEN_CONNECTIONS = Gauge(
    "chat_ws_open_connections", "Websockets this process serves", registry=REGISTRY
)
MESSAGES_IN = _counter("chat_ws_messages_in", "Frames received, by dispatch-key", "dispatch_key")
MESSAGES_OUT = _counter("chat_ws_messages_out", "Messages sent, by dispatch-key", "dispatch_key")
BAD_INPUT = _counter("chat_ws_bad_input", "Frames refused, by reason", "reason")
QUESTIONS = _counter(
    "chat_ws_questions", "Questions by outcome: asked, answered, timeout, gone, cancelled, lost", "outcome"
)
TIME_TO_ANSWER = Histogram(
    "chat_ws_time_to_answer_seconds",
    "Seconds from asking a question to its answer",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 3600, 14400, 86400),
    registry=REGISTRY,
)
SWEEP_EVICTIONS = _counter("chat_ws_sweep_evictions", "Clients forgotten by the sweep, by reason", "reason")

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
