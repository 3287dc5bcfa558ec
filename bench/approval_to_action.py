"""Approval to action: from an approval accepted to the first mutating activity starting,
for every procedure in workflows/registry.py that has a gate.

    .venv/bin/python bench/approval_to_action.py [--runs 5] [--procedure NAME]...
        [--json PATH]

Its own stack (the real worker as its own process) on free ports. For each procedure,
`--runs` times: reset the sandbox and inject the procedure's incident, start the run as
`runbook start` does, wait for the gate, approve it as bob (signed, the CLI's
`make_signed`), then read the run's history: the `WorkflowExecutionUpdateAccepted` event of
the approval, the `ActivityTaskScheduled` of the first mutating activity (bench/runs.py
MUTATING; else the first activity that is not the gate's own) and its `ActivityTaskStarted`
(the worker began the attempt). Both are the server's timestamps. The run is then
cancelled (its verify step would take minutes) and the sandbox reset for the next one.

`--compare-metrics`: the metrics endpoint's overhead. The stack's worker is replaced by one
this script starts, with RUNBOOK_METRICS_PORT (the worker serves the SDK's and the runbooks'
metrics, and `watch_gates` polls visibility) and without it, in alternating rounds (a shared
machine's load drifts), `--runs` runs each over all rounds, one procedure (db-failover).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from temporalio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Report, own_stack, percentile
from bench.runs import SMALL_WINDOW, ActionRun, decide, finish, inject, start, to_action, to_gate
from settings import temporal_client
from stack.local import Stack
from stack.roster import local_key
from stack.servers import launch_worker
from workflows.registry import PROCEDURES, Procedure

TARGET_P99 = 0.25  # seconds


async def one(
    client: Client, procedure: Procedure, key: str, requester_key: str
) -> ActionRun | None:
    sets = SMALL_WINDOW.get(procedure.name, [])
    handle, t0 = await start(client, procedure, sets, key=requester_key)
    gate = await to_gate(handle, t0)
    if gate.gate is None:
        return None  # no gate: nothing to approve
    await decide(handle, key, approve=True)
    run = await to_action(handle)
    # Cancelled, not terminated: the run releases its resource lock on the way out, so the
    # next run's lock is free (a terminated holder is freed only by the lock's next check).
    await handle.cancel()
    await finish(handle, quiet=True)
    return run


def describe(label: str, runs: list[ActionRun], report: Report) -> None:
    scheduled = [r.scheduled for r in runs if r.scheduled is not None]
    started = [r.started for r in runs if r.started is not None]
    if not started:
        report.note(f"{label}: no mutating activity seen after the approval")
        return
    names = Counter(r.activity for r in runs)
    between = Counter(name for r in runs for name in r.between)
    report.note(
        f"{label}: first mutating activity {', '.join(names)}; before it, after the approval: "
        + (", ".join(f"{n} ({c}x)" for n, c in between.items()) or "nothing")
    )
    report.add(
        f"{label}: approval accepted -> action scheduled p50", percentile(scheduled, 50), "s"
    )
    report.add(f"{label}: approval accepted -> action started p50", percentile(started, 50), "s")
    report.add(
        f"{label}: approval accepted -> action started p99",
        percentile(started, 99),
        "s",
        below=TARGET_P99,
    )


async def measure(args: argparse.Namespace, env: dict[str, str], report: Report) -> None:
    client = await temporal_client()
    key = local_key(Path(env["RUNBOOK_STATE_DIR"]), "bob")
    # alice signs her starts (as `runbook start` does with her key): bob alone may approve.
    requester_key = local_key(Path(env["RUNBOOK_STATE_DIR"]), "alice")
    every: list[ActionRun] = []
    async with httpx.AsyncClient(base_url=env["SANDBOX_URL"], timeout=30) as sandbox:
        for name in args.procedure or list(PROCEDURES):
            procedure = PROCEDURES[name]
            print(f"\n{name}: {args.runs} runs", flush=True)
            runs: list[ActionRun] = []
            for _ in range(args.runs):
                await inject(sandbox, name)
                run = await one(client, procedure, key, requester_key)
                if run is None:
                    report.note(f"{name}: no gate (read-only or nothing to do): not measured")
                    break
                runs.append(run)
            if runs:
                describe(name, runs, report)
            every += runs
    if len(every) > 1:
        started = [r.started for r in every if r.started is not None]
        report.add(
            f"all procedures ({len(started)} runs): approval -> action started p50",
            percentile(started, 50),
            "s",
        )
        report.add(
            f"all procedures ({len(started)} runs): approval -> action started p99",
            percentile(started, 99),
            "s",
            below=TARGET_P99,
        )


ROUNDS = 3  # alternating with / without metrics


async def compare_metrics(
    args: argparse.Namespace, stack: Stack, env: dict[str, str], report: Report
) -> None:
    client = await temporal_client()
    key = local_key(Path(env["RUNBOOK_STATE_DIR"]), "bob")
    requester_key = local_key(Path(env["RUNBOOK_STATE_DIR"]), "alice")
    procedure = PROCEDURES[(args.procedure or ["db-failover"])[0]]
    runs: dict[bool, list[ActionRun]] = {True: [], False: []}
    per_round = max(1, -(-args.runs // ROUNDS))
    async with httpx.AsyncClient(base_url=env["SANDBOX_URL"], timeout=30) as sandbox:
        for _ in range(ROUNDS):
            for metrics in (True, False):
                worker = start_worker(stack, metrics)
                try:
                    print(f"{procedure.name}, metrics {'on' if metrics else 'off'}", flush=True)
                    for i in range(per_round + 1):  # the first one warms the new worker up
                        await inject(sandbox, procedure.name)
                        run = await one(client, procedure, key, requester_key)
                        if run is not None and i > 0:
                            runs[metrics].append(run)
                finally:
                    stop_worker(worker)
    for metrics, label in ((True, "with RUNBOOK_METRICS_PORT"), (False, "without")):
        started = [r.started for r in runs[metrics] if r.started is not None]
        name = f"{procedure.name} {label} ({len(started)} runs): approval -> action started"
        report.add(f"{name} p50", percentile(started, 50), "s")
        report.add(f"{name} p99", percentile(started, 99), "s")


def start_worker(stack: Stack, metrics: bool) -> subprocess.Popen[bytes]:
    """worker.py as the stack launches it, with or without its metrics endpoint."""
    launch = launch_worker(stack)
    own = dict(launch.env or {})
    if not metrics:
        own.pop("RUNBOOK_METRICS_PORT"), own.pop("RUNBOOK_METRICS_HOST")
    log = stack.log_file("bench-worker").open("ab")
    return subprocess.Popen(
        launch.argv,
        cwd=launch.cwd,
        env={**stack.child_env(), **own},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)  # it drains and leaves; then the next one polls alone
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per procedure")
    parser.add_argument("--procedure", action="append", choices=sorted(PROCEDURES))
    parser.add_argument(
        "--paging",
        action="store_true",
        help="give the worker a PagerDuty routing key (pages go to the sandbox)",
    )
    parser.add_argument(
        "--compare-metrics",
        action="store_true",
        help="with and without the worker's metrics endpoint (--runs each, one procedure)",
    )
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    report = Report("metrics overhead" if args.compare_metrics else "approval to action")
    started = time.monotonic()
    paging = {"PAGERDUTY_ROUTING_KEY": "bench-routing-key"} if args.paging else {}
    if args.compare_metrics:
        # The worker's dependencies only: this script runs the worker itself.
        parts = ["postgres", "redis", "kafka", "sandbox", "temporal"]
        with own_stack("metrics", parts, paging) as (stack, env):
            asyncio.run(compare_metrics(args, stack, env, report))
    else:
        with own_stack("action", ["worker"], paging) as (_, env):
            asyncio.run(measure(args, env, report))
    print(f"done in {time.monotonic() - started:.0f}s")
    report.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
