"""Render the JSON written by ``mixlab bench --json`` as Markdown tables (for docs/BENCHMARKS.md).

    python benchmarks/report.py bench.json > tables.md
"""
from __future__ import annotations

import json
import sys


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def render(data: dict) -> str:
    h = data["header"]
    lines = [
        f"Machine: {h['machine']}, CPU {h['cpu']} ({h['cpu_count']} cores), torch {h['torch']}, "
        f"{h['threads']} threads, device {h['device']}; {h['date_utc']} UTC; load average "
        f"{h['loadavg_start']} at start, {h.get('loadavg_end')} at end. "
        f"{data['settings']['warmup']} warm-up calls, median of {data['settings']['runs']} interleaved rounds.",
    ]
    for g in data["groups"]:
        lines += ["", f"**{g['title']}** (floor: {g['floor']})", "",
                  "| row | median ms | x floor | min ms | note |", "|---|---:|---:|---:|---|"]
        for r in g["rows"]:
            lines.append(f"| {r['name']} | {fmt(r['median_ms'], '.3f')} | {fmt(r['ratio_to_floor'], '.2f')} | "
                         f"{fmt(r['min_ms'], '.3f')} | {r['note']} |")
    lines += ["", "**Goals in this run** (on medians; on minimums)", ""]
    for g in data["goals"]:
        if g["value"] is None:
            lines.append(f"- {g['goal']}: not measured")
            continue
        lines.append(f"- {g['goal']}: {g['value']:.2f}x ({'met' if g['met'] else 'missed'}); "
                     f"{g['value_min']:.2f}x ({'met' if g['met_min'] else 'missed'})")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python benchmarks/report.py BENCH.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        print(render(json.load(f)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
