"""`make bench`: every benchmark, one after another, each on its own stack (own state dir,
free ports, started and stopped by the benchmark), then bench/RESULTS.md.

    .venv/bin/python bench/run_all.py [--runs 50] [--cli-runs 5] [--action-runs 10]
        [--incidents 1000] [--only to_gate,fanout,...] [--out bench/RESULTS.md]

The defaults are the figures RESULTS.md reports; smaller ones make a quick look
(`make bench BENCH_ARGS="--runs 10 --incidents 200 --out /tmp/bench-quick.md"`: not over the
committed bench/RESULTS.md). Each figure is written with the load
average (1, 5, 15 min) when it was taken: on a shared 2-core machine a busy neighbour moves
every latency, so compare figures taken at a similar load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, loadavg, machine

BENCH = ROOT / "bench"
NAMES = ("to_gate", "fanout", "action", "metrics", "scale", "cold", "lock", "slack")


def plan(args: argparse.Namespace) -> dict[str, list[str]]:
    """Each benchmark's command line (without --json)."""
    return {
        "to_gate": [
            "to_gate.py",
            f"--runs={args.runs}",
            f"--cli-runs={args.cli_runs}",
            f"--window-runs={args.window_runs}",
        ],
        "fanout": ["diagnosis_fanout.py", f"--runs={args.fanout_runs}"],
        "action": ["approval_to_action.py", f"--runs={args.action_runs}"],
        "metrics": ["approval_to_action.py", "--compare-metrics", f"--runs={args.metrics_runs}"],
        "scale": ["scale.py", f"--incidents={args.incidents}", f"--probes={args.probes}"],
        "cold": ["cold_start.py", f"--stack-runs={args.stack_runs}"],
        "lock": ["lock_acquire.py", f"--runs={args.lock_runs}"],
        "slack": ["slack_click.py", f"--runs={args.slack_runs}"],
    }


def run(name: str, argv: list[str], out: Path) -> dict[str, Any]:
    started = time.monotonic()
    load = loadavg()
    print(f"\n===== {name}: {' '.join(argv)} (load {load})", flush=True)
    done = subprocess.run([sys.executable, str(BENCH / argv[0]), *argv[1:], f"--json={out}"])
    took = time.monotonic() - started
    data: dict[str, Any] = {"bench": name, "figures": [], "notes": []}
    if out.exists():
        data = json.loads(out.read_text())
    data.update(seconds=took, exit=done.returncode, load_before=load)
    return data


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def value(fig: dict[str, Any]) -> str:
    v = fig["value"]
    shown = f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return f"{shown} {fig['unit']}"


def verdict(fig: dict[str, Any]) -> str:
    if fig["ok"] is None:
        return ""
    return "met" if fig["ok"] else "**missed**"


def markdown(results: list[dict[str, Any]], args: argparse.Namespace, total: float) -> str:
    box = machine()
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (bench/run_all.py); each benchmark starts its own embedded "
        "stack on free ports. The load average (1, 5, 15 min) is the machine's when the "
        "figure was taken: this machine is shared, so figures taken under load are slower "
        "than the code is.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {cell(v)} |" for k, v in box.items()),
        f"| parameters | {cell(' '.join(args.argv) or 'defaults')} |",
        f"| total time | {total:.0f} s |",
        "",
    ]
    for res in results:
        title = res.get("bench", "?")
        lines += [
            f"## {title}",
            "",
            f"{res['seconds']:.0f} s, exit {res['exit']}, load before {res['load_before']}.",
            "",
            "| figure | value | target | | load |",
            "|---|---|---|---|---|",
        ]
        for fig in res["figures"]:
            lines.append(
                f"| {cell(fig['name'])} | {value(fig)} | {cell(fig['target'])} | "
                f"{verdict(fig)} | {fig['load']} |"
            )
        if res["notes"]:
            lines += ["", *(f"- {cell(n)}" for n in res["notes"])]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="start-to-gate runs a procedure")
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--window-runs", type=int, default=3)
    parser.add_argument("--fanout-runs", type=int, default=2)
    parser.add_argument("--action-runs", type=int, default=5)
    parser.add_argument("--metrics-runs", type=int, default=30, help="each, with and without")
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--stack-runs", type=int, default=2)
    parser.add_argument("--lock-runs", type=int, default=200)
    parser.add_argument("--slack-runs", type=int, default=30)
    parser.add_argument("--only", default="", help=f"comma-separated, of: {', '.join(NAMES)}")
    parser.add_argument("--out", default=str(BENCH / "RESULTS.md"))
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    chosen = [n for n in args.only.split(",") if n] or list(plan(args))
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="runbook-bench-all-") as tmp:
        for name, argv in plan(args).items():
            if name in chosen:
                results.append(run(name, argv, Path(tmp) / f"{name}.json"))
    total = time.monotonic() - started
    Path(args.out).write_text(markdown(results, args, total))
    print(f"\nall benchmarks in {total:.0f}s; figures in {args.out}")
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
