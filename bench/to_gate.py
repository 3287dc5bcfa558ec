"""Start to approval request: from `runbook start` to the gate open with the diagnosis and
the plan, for every procedure in workflows/registry.py.

    .venv/bin/python bench/to_gate.py [--runs 50] [--cli-runs 5] [--window-runs 3]
        [--procedure NAME]... [--json PATH]

It starts its own stack (the real worker as its own process) on free ports in a temporary
state dir, and for each procedure of the registry (procedures added later are taken as
they are registered): resets the sandbox and injects the procedure's incident, then, after
one warm-up run, `--runs` times

1. starts the run through the CLI's own client path (`cli.runs.build_input` and
   `start_procedure`: `runbook start` without the process start-up);
2. follows the run's history by long poll until the search attribute `RunbookGate` becomes
   `waiting` (the gate is open: the diagnosis and the plan are in the run's status), and
   until the approval request reached Slack (the sandbox's webhook);
3. terminates it (the next run has the same workflow id).

`--cli-runs` more runs (after one uncounted) start with the `runbook start --json` process
itself, as it runs installed (bench/common.py `cli_environ`: bytecode cached): its wall time
(interpreter start-up and imports included, what a person waits for) and from the process
start to the gate. A procedure without a gate (triage: read-only) is timed to its result.

kafka-lag and api-errors measure a rate over a window by design (kafka-lag: the lag twice
`sample_seconds` = 5 s apart; api-errors: the 5xx share over `error_window_seconds` = 10 s):
their `--runs` use the smallest window (`sample_seconds=0`, `error_window_seconds=0.5`) so
the figure is the runbook's own cost, and `--window-runs` more use the default input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from temporalio.client import Client, WorkflowHandle

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, Report, cli_environ, own_stack, percentile, runbook_argv
from bench.runs import (
    SMALL_WINDOW,
    GateRun,
    finish,
    inject,
    start,
    to_gate,
)
from settings import temporal_client
from workflows.registry import PROCEDURES, Procedure

P50_TARGET = 1.0  # seconds
P99_TARGET = 2.0


async def close(run: GateRun, handle: WorkflowHandle) -> None:
    """End the run waiting at its gate before the next one (same workflow id). Terminated,
    not rejected: a rejection's notification and incident record are not measured here and
    would only lengthen `make bench` (bench/approval_to_action.py decides gates)."""
    if run.gate is not None:
        await handle.terminate("benchmark: the gate opened; nothing to decide")
    await finish(handle, quiet=True)


async def in_process(client: Client, procedure: Procedure, sets: list[str]) -> GateRun:
    handle, t0 = await start(client, procedure, sets)
    run = await to_gate(handle, t0)
    await close(run, handle)
    return run


async def by_cli(client: Client, procedure: Procedure, sets: list[str]) -> GateRun:
    argv = [*runbook_argv(), "start", procedure.name, "--json", "--requested-by", "bench"]
    argv += [a for s in sets for a in ("--set", s)]
    t0 = time.time()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=cli_environ()
    )
    out, err = await proc.communicate()
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"runbook start {procedure.name}: exit {proc.returncode}: {err!r}")
    started = json.loads(out)
    handle = client.get_workflow_handle(started["workflow_id"], run_id=started["run_id"])
    run = await to_gate(handle, t0)
    run.cli_wall = wall
    await close(run, handle)
    return run


def describe(label: str, runs: list[GateRun], report: Report) -> None:
    gates = [r.gate for r in runs if r.gate is not None]
    if gates:
        for p, target in ((50, P50_TARGET), (99, P99_TARGET)):
            report.add(f"{label}: start -> gate open p{p}", percentile(gates, p), "s", below=target)
        slack = [r.slack for r in runs if r.slack is not None]
        for p in (50, 99) if slack else ():
            report.add(
                f"{label}: start -> approval request in Slack p{p}", percentile(slack, p), "s"
            )
        keys = ("first task", "diagnosis", "escalation plan", "to gate")
        text = ", ".join(
            f"{k} {percentile([r.parts[k] for r in runs if k in r.parts], 50) * 1000:.0f}"
            for k in keys
            if any(k in r.parts for r in runs)
        )
        report.note(f"{label}: where the time goes (server, p50 ms): {text}")
    ended = [r.ended for r in runs if r.gate is None and r.ended is not None]
    if ended:
        for p, target in ((50, P50_TARGET), (99, P99_TARGET)):
            report.add(
                f"{label}: start -> result (no gate) p{p}", percentile(ended, p), "s", below=target
            )
    cli = [r.cli_wall for r in runs if r.cli_wall is not None]
    if cli:
        report.add(f"{label}: `runbook start` process wall p50", percentile(cli, 50), "s")
        report.add(f"{label}: `runbook start` process wall max", max(cli), "s")


async def measure(args: argparse.Namespace, env: dict[str, str], report: Report) -> None:
    client = await temporal_client()
    names = args.procedure or list(PROCEDURES)
    report.note(f"procedures in the registry: {', '.join(PROCEDURES)}")
    async with httpx.AsyncClient(base_url=env["SANDBOX_URL"], timeout=30) as sandbox:
        for name in names:
            procedure = PROCEDURES[name]
            injected = await inject(sandbox, name)
            small = SMALL_WINDOW.get(name, [])
            label = name + (f" ({', '.join(small)})" if small else "")
            print(f"\n{label}: incident {injected}; {args.runs} runs", flush=True)
            await in_process(client, procedure, small)  # warm-up, not counted
            runs = [await in_process(client, procedure, small) for _ in range(args.runs)]
            describe(label, runs, report)
            if small and args.window_runs:
                windowed = [
                    await in_process(client, procedure, []) for _ in range(args.window_runs)
                ]
                describe(f"{name} (default window)", windowed, report)
            if args.cli_runs:
                await by_cli(client, procedure, small)  # warm-up, not counted
                cli = [await by_cli(client, procedure, small) for _ in range(args.cli_runs)]
                describe(f"{label} by the CLI process", cli, report)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--window-runs", type=int, default=3)
    parser.add_argument("--procedure", action="append", choices=sorted(PROCEDURES))
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    report = Report("start to approval request")
    started = time.monotonic()
    with own_stack("gate", ["worker"]) as (_, env):
        asyncio.run(measure(args, env, report))
    print(f"done in {time.monotonic() - started:.0f}s")
    report.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
