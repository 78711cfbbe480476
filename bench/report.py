"""Turning a benchmark run into medians, ratios against python-socketio, a table and a plot."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

REFERENCE = "python-socketio (uvicorn)"
REDIS_PEER = "python-socketio + Redis (uvicorn)"
RT_RATIO_TARGET = {50: 0.7, 500: 1.0}  # round trips/s against the reference, by clients
REDIS_PEER_RATIO_TARGET = 3.0  # round trips/s against socket.io with AsyncRedisManager
CPU_TARGET_US = 110.0  # server CPU per round trip at C=50
MEMORY_TARGET_KIB = 25.0  # per idle connection at 10,000 connections
CONNECT_RATIO_TARGET = 1.0  # concurrent connects/s against the reference


def _median(values: list[Any]) -> float | None:
    found = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(found) if found else None


def aggregate(data: dict[str, Any]) -> dict[str, Any]:
    """Medians over rounds per (target, clients), and ratios against the reference."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in data["rt"]:
        groups[(row["target"], row["clients"])].append(row)
    rt: dict[tuple[str, int], dict[str, Any]] = {}
    for key, rows in groups.items():
        rt[key] = {
            field: _median([r.get(field) for r in rows])
            for field in (
                "rt_per_s", "p50_ms", "p99_ms", "server_p50_ms",
                "server_us_per_rt", "redis_us_per_rt", "generator_us_per_rt",
            )
        }
        rt[key]["rounds"] = len(rows)
        rt[key]["errors"] = sum(sum(r["errors"].values()) for r in rows)
        rt[key]["missing"] = sum(r["expected"] - r["answered"] for r in rows)
    for (target, clients), agg in rt.items():
        ref = rt.get((REFERENCE, clients))
        agg["rt_ratio"] = agg["rt_per_s"] / ref["rt_per_s"] if ref and ref["rt_per_s"] else None
        agg["p99_ratio"] = agg["p99_ms"] / ref["p99_ms"] if ref and ref["p99_ms"] else None
    connects: dict[str, dict[str, Any]] = {}
    by_target: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in data["connects"]:
        by_target[row["target"]].append(row)
    for target, rows in by_target.items():
        connects[target] = {
            "per_s": _median([r["per_s"] for r in rows]),
            "us_per_connect": _median([r["server_us_per_connect"] for r in rows]),
            "attempted": sum(r["attempted"] for r in rows),
            "opened": sum(r["opened"] for r in rows),
            "errors": merge_counts(r["errors"] for r in rows),
        }
    for target, agg in connects.items():
        ref = connects.get(REFERENCE)
        agg["ratio"] = agg["per_s"] / ref["per_s"] if ref and ref["per_s"] else None
    return {"rt": rt, "connects": connects, "memory": data["memory"]}


def merge_counts(dicts: Any) -> dict[str, int]:
    """Sum dicts of counts key by key."""
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _f(value: Any, fmt: str = "{:.0f}") -> str:
    return "–" if value is None else fmt.format(value)


def targets(data: dict[str, Any], agg: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, what was measured, met?) for every chat_ws variant; None when not measured."""
    out: list[tuple[str, str, bool | None]] = []
    names = sorted({t for t, _ in agg["rt"] if t.startswith("chat_ws") and " at " not in t})
    for name in names:
        for clients, wanted in RT_RATIO_TARGET.items():
            a = agg["rt"].get((name, clients))
            if a is None or a["rt_ratio"] is None:
                continue
            out.append((
                f"{name}: round trips/s at C={clients} ≥ {wanted}× socketio",
                f"{a['rt_ratio']:.2f}×", a["rt_ratio"] >= wanted,
            ))
            peer = agg["rt"].get((REDIS_PEER, clients))
            if peer and peer["rt_per_s"]:
                ratio = a["rt_per_s"] / peer["rt_per_s"]
                out.append((
                    f"{name}: round trips/s at C={clients} ≥ {REDIS_PEER_RATIO_TARGET:g}× socketio + Redis",
                    f"{ratio:.2f}×", ratio >= REDIS_PEER_RATIO_TARGET,
                ))
            if clients == 500:
                out.append((
                    f"{name}: p99 at C={clients} no worse than socketio",
                    f"{a['p99_ms']:.1f} vs {agg['rt'][(REFERENCE, clients)]['p99_ms']:.1f} ms", a["p99_ratio"] <= 1.0,
                ))
        cpu = agg["rt"].get((name, 50), {}).get("server_us_per_rt")
        if cpu:
            out.append((f"{name}: server CPU ≤ {CPU_TARGET_US:.0f} µs per round trip at C=50", f"{cpu:.0f} µs", cpu <= CPU_TARGET_US))
        conn = agg["connects"].get(name)
        if conn and conn["ratio"] is not None:
            out.append((
                f"{name}: concurrent connects ≥ {CONNECT_RATIO_TARGET}× socketio's rate, none lost",
                f"{conn['ratio']:.2f}×, {conn['opened']}/{conn['attempted']} opened",
                conn["ratio"] >= CONNECT_RATIO_TARGET and conn["opened"] == conn["attempted"],
            ))
        for row in agg["memory"]:
            if row["target"] == name and row["connections"] == 10000:
                ok = row["kib_per_connection"] is not None and row["kib_per_connection"] <= MEMORY_TARGET_KIB
                out.append((
                    f"{name}: ≤ {MEMORY_TARGET_KIB:.0f} KiB per idle connection at 10,000, all held",
                    f"{_f(row['kib_per_connection'], '{:.1f}')} KiB, {row['held']}/10000 held",
                    ok and row["held"] == 10000 and not row["errors"],
                ))
    return out


def markdown(data: dict[str, Any], agg: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark run {data['run_id']} ({data['started']}, {data['seconds']} s)",
        "",
        f"Rounds: {data['args']['rounds']}, interleaved; medians over rounds. Load generator: "
        f"{data['generators']} process(es) on the same 2-core machine as the servers and Redis.",
        "",
        "## Ask/answer round trips",
        "",
        "| clients | server | round trips/s | × socketio | p50 ms | p99 ms | server-side ask p50 ms "
        "| server CPU µs/rt | Redis CPU µs/rt | generator CPU µs/rt | errors |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (target, clients), a in sorted(agg["rt"].items(), key=lambda kv: (kv[0][1], kv[0][0] == REFERENCE, kv[0][0])):
        errors = a["errors"] + a["missing"]
        lines.append(
            f"| {clients} | {target} | {_f(a['rt_per_s'])} | {_f(a['rt_ratio'], '{:.2f}')} | {_f(a['p50_ms'], '{:.1f}')} "
            f"| {_f(a['p99_ms'], '{:.1f}')} | {_f(a['server_p50_ms'], '{:.2f}')} | {_f(a['server_us_per_rt'])} "
            f"| {_f(a['redis_us_per_rt'])} | {_f(a['generator_us_per_rt'])} | {errors} |"
        )
    if agg["connects"]:
        lines += [
            "",
            "## Concurrent connects",
            "",
            "| server | connects/s | × socketio | opened / attempted | server CPU µs/connect | errors |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for target, c in sorted(agg["connects"].items(), key=lambda kv: (kv[0] == REFERENCE, kv[0])):
            lines.append(
                f"| {target} | {_f(c['per_s'])} | {_f(c['ratio'], '{:.2f}')} | {c['opened']} / {c['attempted']} "
                f"| {_f(c['us_per_connect'])} | {c['errors'] or ''} |"
            )
    if agg["memory"]:
        lines += [
            "",
            "## Memory per idle connection",
            "",
            "| server | connections | held | RSS MiB | KiB per connection | errors |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for row in agg["memory"]:
            lines.append(
                f"| {row['target']} | {row['connections']} | {row['held']} | {row['rss_kib'] / 1024:.0f} "
                f"| {_f(row['kib_per_connection'], '{:.1f}')} | {row['errors'] or ''} |"
            )
    checks = targets(data, agg)
    if checks:
        lines += ["", "## Targets", "", "| target | measured | met |", "| --- | --- | --- |"]
        for what, measured, ok in checks:
            lines.append(f"| {what} | {measured} | {'yes' if ok else 'no' if ok is not None else '–'} |")
    if data.get("cluster_spread"):
        lines += [
            "", "## Redis Cluster: keys and commands per server", "",
            "Keys held while the idle connections are open; commands served during the whole run.", "",
            "| server | role | keys | commands |", "|---|---|---:|---:|",
        ] + [f"| {r['node']} | {r['role']} | {r['keys']} | {r['commands']} |" for r in data["cluster_spread"]]
    if data["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in data["notes"]]
    return "\n".join(lines) + "\n"


def plot(agg: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({t for t, _ in agg["rt"]}, key=lambda t: (t == REFERENCE, t))
    sizes = sorted({c for _, c in agg["rt"]})
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    width = 0.8 / max(1, len(names))
    panels = [
        ("rt_per_s", "round trips / s", axes[0][0]),
        ("p99_ms", "p99 latency, ms", axes[0][1]),
        ("server_us_per_rt", "server CPU µs / round trip", axes[0][2]),
    ]
    for field, title, ax in panels:
        for i, name in enumerate(names):
            values = [agg["rt"].get((name, c), {}).get(field) or 0 for c in sizes]
            ax.bar([x + i * width for x in range(len(sizes))], values, width, label=name)
        ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(sizes))], [f"C={c}" for c in sizes])
        ax.set_title(title)
    conn = [n for n in names if n in agg["connects"]]
    axes[1][0].bar(range(len(conn)), [agg["connects"][n]["per_s"] or 0 for n in conn],
                   color=[f"C{names.index(n)}" for n in conn])
    axes[1][0].set_xticks(range(len(conn)), [n.replace(" (", "\n(") for n in conn], fontsize=7)
    axes[1][0].set_title("concurrent connects / s")
    mem = [r for r in agg["memory"] if r["kib_per_connection"] is not None]
    axes[1][1].bar(range(len(mem)), [r["kib_per_connection"] for r in mem],
                   color=[f"C{names.index(r['target'])}" if r["target"] in names else "grey" for r in mem])
    axes[1][1].set_xticks(
        range(len(mem)), [f"{r['target'].replace(' (', chr(10) + '(')}\n{r['connections']:,}" for r in mem], fontsize=6
    )
    axes[1][1].axhline(MEMORY_TARGET_KIB, color="grey", linestyle="--", linewidth=1)
    axes[1][1].set_title("KiB per idle connection")
    handles, labels = axes[0][0].get_legend_handles_labels()
    axes[1][2].axis("off")
    axes[1][2].legend(handles, labels, loc="center")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def ratios(agg: dict[str, Any]) -> str:
    """One line per chat_ws variant and size: the ratios against socketio."""
    lines = []
    for (target, clients), a in sorted(agg["rt"].items(), key=lambda kv: (kv[0][0], kv[0][1])):
        if target == REFERENCE or a["rt_ratio"] is None:
            continue
        lines.append(
            f"{target:<24} C={clients:<4} round trips/s {a['rt_ratio']:.2f}× socketio, p99 {a['p99_ratio']:.2f}×, "
            f"server CPU {_f(a['server_us_per_rt'])} µs/rt"
        )
    for target, c in sorted(agg["connects"].items()):
        if target != REFERENCE and c["ratio"] is not None:
            lines.append(f"{target:<24} connects/s {c['ratio']:.2f}× socketio ({c['opened']}/{c['attempted']} opened)")
    return "\n".join(lines)


def write_results(data: dict[str, Any], out: Path) -> str:
    """Write latest.json, latest.md and latest.png under out; return the ratios to print."""
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(data)
    (out / "latest.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    (out / "latest.md").write_text(markdown(data, agg))
    plot(agg, out / "latest.png")
    return ratios(agg) + f"\nwritten: {out / 'latest.md'}, {out / 'latest.png'}"
