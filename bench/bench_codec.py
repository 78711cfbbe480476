"""Decode cost of wire messages: the fast EDN reader against edn_format and json.loads.

Run from the checkout: ``.venv/bin/python bench/bench_codec.py [--repeats N] [--budget SECONDS]``.
Each repetition times every decoder once on every message, in turn, so that machine noise falls on
all of them alike; the table shows the median microseconds per decode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import edn_format  # noqa: E402

from chat_ws.codec import EDN, JSON, _decode_with_edn_format  # noqa: E402
from chat_ws.edn_reader import read  # noqa: E402

CID = "5f0c0000-aaaa-bbbb-cccc-000000000000"
NESTING = 32
MESSAGES = {
    "ping": f'{{:dispatch-key :ping, :ping-id 3, :client-id "{CID}"}}',
    "domain-expert-says": (
        f'{{:dispatch-key :domain-expert-says, :msg-text "Bicycles.", :promise-keys #{{:promise-4711}}, '
        f':client-id "{CID}"}}'
    ),
    "ping-confirm (#inst)": '{:dispatch-key :ping-confirm, :timestamp #inst "2026-11-27T10:00:00.000-00:00"}',
    "answer with a table": (
        '{:dispatch-key :domain-expert-says, :msg-text "Here is the table.", :promise-keys #{:promise-1 '
        ':promise-2}, :table {:table-headings [{:title "Product" :key :product} {:title "Qty" :key :qty}], '
        ':table-body [{:product "Bicycle" :qty 12} {:product "Tricycle" :qty 3} {:product "Scooter" '
        ':qty 7.5}]}, :client-id "' + CID + '"}'
    ),
}


def decoders(text: str) -> dict[str, Callable[[], Any]]:
    json_text = JSON.encode(EDN.decode(text, max_nesting=NESTING))
    return {
        "fast reader": lambda: read(text, NESTING),
        "EdnCodec.decode": lambda: EDN.decode(text, max_nesting=NESTING),
        "edn_format.loads": lambda: edn_format.loads(text),
        "edn_format path": lambda: _decode_with_edn_format(text, NESTING),
        "json.loads": lambda: json.loads(json_text),
    }


def calls_per_batch(fn: Callable[[], Any], budget: float) -> int:
    """How many calls take about ``budget`` seconds."""
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < budget / 4:
        fn()
        n += 1
    return max(1, n * 4)


def run(repeats: int, budget: float) -> dict[str, dict[str, float]]:
    plans = {name: decoders(text) for name, text in MESSAGES.items()}
    sizes = {(m, d): calls_per_batch(fn, budget) for m, ds in plans.items() for d, fn in ds.items()}
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in sizes}
    for _ in range(repeats):
        for message, ds in plans.items():
            for decoder, fn in ds.items():
                n = sizes[(message, decoder)]
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                samples[(message, decoder)].append((time.perf_counter() - start) / n * 1e6)
    return {m: {d: statistics.median(samples[(m, d)]) for d in ds} for m, ds in plans.items()}


def table(results: dict[str, dict[str, float]]) -> str:
    columns = list(next(iter(results.values())))
    lines = [
        "| message | bytes | " + " | ".join(f"{c} (µs)" for c in columns) + " | edn_format / fast |",
        "|---|---:|" + "---:|" * len(columns) + "---:|",
    ]
    for message, row in results.items():
        ratio = row["edn_format.loads"] / row["fast reader"]
        cells = " | ".join(f"{row[c]:.1f}" for c in columns)
        lines.append(f"| {message} | {len(MESSAGES[message].encode())} | {cells} | {ratio:.0f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="interleaved repetitions (default 15)")
    parser.add_argument("--budget", type=float, default=0.02, help="seconds per timed batch (default 0.02)")
    args = parser.parse_args()
    results = run(args.repeats, args.budget)
    print(f"Median µs per decode over {args.repeats} interleaved repetitions, Python {sys.version.split()[0]}\n")
    print(table(results))


if __name__ == "__main__":
    main()
