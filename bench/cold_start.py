"""Cold start: `runbook stack up` until ready, the worker alone until it polls, and the
`runbook` command itself.

    .venv/bin/python bench/cold_start.py [--stack-runs 2] [--worker-runs 5] [--help-runs 10]
        [--json PATH]

1. `runbook stack up` as a person runs it (the console script, its own process), each time
   in a new empty state dir (RUNBOOK_STATE_DIR) on free ports (RUNBOOK_PORT_*): PostgreSQL's
   initdb, every server, the worker and the webhook, until the command returns (it returns
   when every part answers its own protocol and the worker polls). Then `runbook stack up`
   again on the running stack (it starts nothing), and `runbook stack down`.
2. With a stack up, `python worker.py` alone on a task queue of its own, from the process
   start until the Temporal server lists it as a poller of that queue
   (DescribeTaskQueue), then SIGTERM. Also the import time of `worker` alone.
3. `runbook --help` (the command table: no command module imported) as it runs installed
   (bench/common.py `cli_environ`: bytecode cached), and the import of `cli.runs`, what every
   run command (start, approve, status, ...) loads before it contacts anything.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    Report,
    cli_environ,
    embedded_environ,
    free_ports,
    new_state_dir,
    own_stack,
    percentile,
    runbook_argv,
)
from settings import temporal_client

STACK_TARGET = 15.0
WARM_UP_TARGET = 5.0  # a second `stack up` finds every part up and starts nothing
WORKER_TARGET = 3.0
HELP_TARGET = 0.3


def timed_up(env: dict[str, str]) -> float:
    started = time.monotonic()
    up = subprocess.run([*runbook_argv(), "stack", "up"], env=env, capture_output=True, text=True)
    took = time.monotonic() - started
    if up.returncode != 0:
        raise RuntimeError(f"runbook stack up failed: {up.stdout[-800:]}{up.stderr[-800:]}")
    return took


def stack_up_once() -> tuple[float, float]:
    """The cold `stack up` in an empty state dir, then a second one on the running stack."""
    state = new_state_dir("cold")
    env = embedded_environ({"RUNBOOK_STATE_DIR": str(state)})
    env |= {f"RUNBOOK_PORT_{p.upper().replace('-', '_')}": str(n) for p, n in free_ports().items()}
    try:
        return timed_up(env), timed_up(env)
    finally:
        subprocess.run([*runbook_argv(), "stack", "down"], env=env, capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


async def worker_once(env: dict[str, str]) -> float:
    queue = f"bench-cold-{uuid.uuid4().hex[:8]}"
    client = await temporal_client()
    request = DescribeTaskQueueRequest(
        namespace="default",
        task_queue=TaskQueue(name=queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    child_env = {**os.environ, **env, "RUNBOOK_TASK_QUEUE": queue}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "worker.py")],
        env=child_env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while True:
            described = await client.workflow_service.describe_task_queue(request)
            if described.pollers:
                return time.monotonic() - started
            if proc.poll() is not None:
                raise RuntimeError(f"worker.py exited with {proc.returncode} before polling")
            if time.monotonic() - started > 60:
                raise RuntimeError("worker.py did not poll within 60 s")
            await asyncio.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def process_seconds(argv: list[str], runs: int) -> list[float]:
    """Wall times of a process as it runs installed, after one uncounted run."""
    env = cli_environ()
    times = []
    for _ in range(runs + 1):
        started = time.monotonic()
        subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, check=True)
        times.append(time.monotonic() - started)
    return times[1:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stack-runs", type=int, default=2)
    parser.add_argument("--worker-runs", type=int, default=5)
    parser.add_argument("--help-runs", type=int, default=10)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    report = Report("cold start")
    started = time.monotonic()

    runs = [stack_up_once() for _ in range(args.stack_runs)]
    ups = [cold for cold, _ in runs]
    for i, (cold, warm) in enumerate(runs):
        print(f"  runbook stack up #{i + 1}: {cold:.1f}s; again on it: {warm:.1f}s", flush=True)
    if ups:
        report.add(
            "`runbook stack up` (empty state dir) until ready, p50", percentile(ups, 50), "s"
        )
        report.add(
            "`runbook stack up` (empty state dir) until ready, max",
            max(ups),
            "s",
            below=STACK_TARGET,
        )
        report.add(
            "`runbook stack up` again on the running stack, max",
            max(warm for _, warm in runs),
            "s",
            below=WARM_UP_TARGET,
        )

    if args.worker_runs:
        parts = ["postgres", "redis", "kafka", "sandbox", "temporal"]
        with own_stack("cold-worker", parts) as (_, env):
            polls = [asyncio.run(worker_once(env)) for _ in range(args.worker_runs)]
        for i, took in enumerate(polls):
            print(f"  worker.py #{i + 1}: polling after {took:.2f}s", flush=True)
        report.add("worker alone: process start -> polling, p50", percentile(polls, 50), "s")
        report.add(
            "worker alone: process start -> polling, max", max(polls), "s", below=WORKER_TARGET
        )
    if args.help_runs:
        helps = process_seconds([*runbook_argv(), "--help"], args.help_runs)
        report.add(
            "`runbook --help` process wall p50", percentile(helps, 50), "s", below=HELP_TARGET
        )
        report.add("`runbook --help` process wall max", max(helps), "s")
    for module in ("worker", "cli.runs"):
        best = min(process_seconds([sys.executable, "-c", f"import {module}"], 3))
        report.add(f"`python -c 'import {module}'` process wall (best of 3)", best, "s")
    print(f"done in {time.monotonic() - started:.0f}s")
    report.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
