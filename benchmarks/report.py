"""Render the JSON written by ``mixlab bench --json`` as Markdown tables (for docs/BENCHMARKS.md).

    python benchmarks/report.py bench.json > tables.md
    python benchmarks/report.py --pivot bench.json   # a --contention run: one table per group, a column per condition
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


def pivot(data: dict) -> str:
    """One table per group, one column per condition (median ms and ratio to the group's floor in that condition)."""
    conds = data.get("conditions") or [{"label": "", "contended": False, "threads": data["header"]["threads"]}]
    names = [c["label"].strip(" []") or f"{c['threads']} threads" for c in conds]
    keyed = {}
    for g in data["groups"]:
        base = g["title"].split(" [")[0]
        state = g.get("condition")
        i = next((k for k, c in enumerate(conds) if state is None
                  or (c["contended"], c["threads"]) == (state["contended"], state["threads"])), 0)
        keyed.setdefault(base, {"floor": g["floor"], "cols": {}})["cols"][i] = {r["name"]: r for r in g["rows"]}
    h = data["header"]
    lines = [f"Machine: {h['machine']}, CPU {h['cpu']} ({h['cpu_count']} cores), torch {h['torch']}; "
             f"{h['date_utc']} UTC; load average {h['loadavg_start']} at start, {h.get('loadavg_end')} at end; per "
             f"condition: " + "; ".join(f"{n}: {c.get('loadavg_start')} -> {c.get('loadavg_end')}"
                                        for n, c in zip(names, conds)) + ". "
             f"{data['settings']['warmup']} warm-up calls, median of {data['settings']['runs']} interleaved rounds; "
             f"each cell: median ms (x the group's floor in that condition)."]
    for base, grp in keyed.items():
        cols = sorted(grp["cols"])
        lines += ["", f"**{base}** (floor: {grp['floor']})", "",
                  "| row | " + " | ".join(names[i] for i in cols) + " |", "|---|" + "---:|" * len(cols)]
        order = list(dict.fromkeys(n for i in cols for n in grp["cols"][i]))
        for name in order:
            cells = []
            for i in cols:
                r = grp["cols"][i].get(name)
                cells.append("-" if r is None or r["median_ms"] is None else
                             f"{r['median_ms']:.2f} ({fmt(r['ratio_to_floor'], '.2f')})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "**Goals in this run** (on medians; on minimums)", ""]
    for g in data["goals"]:
        if g["value"] is not None:
            lines.append(f"- {g['goal']}: {g['value']:.2f}x ({'met' if g['met'] else 'missed'}); "
                         f"{g['value_min']:.2f}x ({'met' if g['met_min'] else 'missed'})")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    wide = "--pivot" in argv
    argv = [a for a in argv if a != "--pivot"]
    if len(argv) != 1:
        print("usage: python benchmarks/report.py [--pivot] BENCH.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        data = json.load(f)
    print(pivot(data) if wide else render(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
