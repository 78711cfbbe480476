"""Results of a load test: what each worker measured, merged per scenario, as a table and JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_ERROR_SAMPLES = 10  # error messages kept per worker and per scenario


def percentile(ordered: list[float], q: float) -> float:
    """The q-th percentile (0..100) of sorted values, nearest rank; NaN when there are none."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(values: list[float]) -> dict[str, float]:
    """n, p50, p90, p99 and max of a latency series (milliseconds)."""
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else math.nan,
    }


@dataclass
class WorkerResult:
    """What one worker (a process or a thread) measured in one scenario."""

    counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)  # milliseconds
    values: dict[str, list[float]] = field(default_factory=dict)  # other series (times, server figures)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(f"{kind}: {detail}" if detail else kind)

    def latency(self, name: str, ms: float) -> None:
        self.latencies.setdefault(name, []).append(ms)

    def value(self, name: str, v: float) -> None:
        self.values.setdefault(name, []).append(v)

    def merge(self, other: WorkerResult) -> None:
        for name, n in other.counts.items():
            self.count(name, n)
        for kind, n in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + n
        room = MAX_ERROR_SAMPLES - len(self.error_samples)
        self.error_samples.extend(other.error_samples[: max(0, room)])
        for name, series in other.latencies.items():
            self.latencies.setdefault(name, []).extend(series)
        for name, series in other.values.items():
            self.values.setdefault(name, []).extend(series)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerResult:
        return cls(**data)


@dataclass
class ScenarioReport:
    """One scenario: merged measurements, the leak check and what the orchestrator saw."""

    name: str
    prefix: str
    clients: int = 0  # distinct client-ids the scenario used
    operations: int = 0  # the scenario's unit of work (pings, cycles, questions, ...)
    operation: str = ""  # what `operations` counts
    primary: str = ""  # the latency series shown in the summary row
    duration: float = 0.0  # seconds
    result: WorkerResult = field(default_factory=WorkerResult)
    leaks: dict[str, int] | None = None  # None when the check could not run
    leak_settle: float | None = None  # seconds until the leak counts reached 0
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return sum(self.result.errors.values())

    @property
    def leak_count(self) -> int:
        return sum(self.leaks.values()) if self.leaks else 0

    @property
    def ok(self) -> bool:
        return self.error_count == 0 and self.leaks is not None and self.leak_count == 0

    def rate(self) -> float:
        """Operations per second over the measured window (after connecting, where it applies)."""
        seconds = float(self.extra.get("active_seconds") or self.duration)
        return self.operations / seconds if seconds > 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency_summary"] = {k: summarize(v) for k, v in self.result.latencies.items()}
        data["ok"] = self.ok
        return data


@dataclass
class StressReport:
    """A whole run."""

    run_id: str
    url: str
    processes: int
    scenarios: list[ScenarioReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.scenarios) and all(s.ok for s in self.scenarios)

    def as_dict(self, *, raw: bool = True) -> dict[str, Any]:
        scenarios = []
        for s in self.scenarios:
            data = s.as_dict()
            if not raw:
                data["result"].pop("latencies")
                data["result"].pop("values")
            scenarios.append(data)
        return {
            "run_id": self.run_id,
            "url": self.url,
            "processes": self.processes,
            "ok": self.ok,
            "scenarios": scenarios,
        }


def _ms(v: float) -> str:
    if math.isnan(v):
        return "-"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _leaks(s: ScenarioReport) -> str:
    if s.leaks is None:
        return "unchecked"
    if not s.leak_count:
        return "0"
    return ", ".join(f"{k}={v}" for k, v in s.leaks.items() if v)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows)
    return lines


def render(report: StressReport) -> str:
    """The summary table, the latency series, then errors and notes."""
    rows = []
    for s in report.scenarios:
        p = summarize(s.result.latencies.get(s.primary, []))
        rows.append(
            [
                s.name,
                str(s.clients),
                f"{s.operations} {s.operation}",
                f"{s.duration:.1f}",
                f"{s.rate():.0f}",
                f"{s.primary} {_ms(p['p50'])}/{_ms(p['p99'])}",
                str(s.error_count),
                _leaks(s),
                "ok" if s.ok else "FAIL",
            ]
        )
    headers = ["scenario", "clients", "operations", "seconds", "ops/s", "p50/p99 ms", "errors", "leaks", ""]
    lines = _table(headers, rows)
    series_rows = []
    for s in report.scenarios:
        for name, values in sorted(s.result.latencies.items()):
            p = summarize(values)
            series_rows.append([s.name, name, str(p["n"]), _ms(p["p50"]), _ms(p["p90"]), _ms(p["p99"]), _ms(p["max"])])
    if series_rows:
        lines.append("")
        lines.extend(_table(["scenario", "latency (ms)", "n", "p50", "p90", "p99", "max"], series_rows))
    for s in report.scenarios:
        for kind, n in sorted(s.result.errors.items()):
            lines.append(f"{s.name}: {n} x {kind}")
        for sample in s.result.error_samples[:5]:
            lines.append(f"{s.name}:   e.g. {sample}")
        for note in s.notes:
            lines.append(f"{s.name}: {note}")
    return "\n".join(lines)
