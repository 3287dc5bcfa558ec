"""Lock acquisition on a free lock: what taking a resource's lock adds before a mutation.

    .venv/bin/python bench/lock_acquire.py [--runs 200] [--json PATH]

Its own Temporal dev server on a free port; a worker in this process with the real lock
(workflows/lock.py, activities/locks.py) and the worker's sandboxed runner. Each run is a
small runbook that takes one lock with `exclusive(...)`, exactly as a procedure does after
its gate. The worker's own clock is read by a local activity right before the lock is asked
for and right after it is granted; two back-to-back readings before that give the cost of
a reading itself, which is subtracted. Two cases, `--runs` each, one run after the other:

- a new resource every run: the request starts the lock's workflow (Update-with-start);
- the same resource every run: the previous run's lock has just been released and ended,
  so the request starts it again, or meets it while it ends (the request is retried).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from activities.locks import LockActivities
from bench.common import Report, ms, own_stack, percentile
from bench.lock_probe import LockAcquireProbe, ProbeInput, clock
from workflows.lock import ResourceLock, ecs_service

TARGET_P99_MS = 100.0


async def one(client: Client, queue: str, resource: str) -> float:
    handle = await client.start_workflow(
        LockAcquireProbe.run,
        ProbeInput(resource=resource, requested_by="bench"),
        id=f"lock-bench/{uuid.uuid4()}",
        task_queue=queue,
    )
    stamps = await handle.result()
    return max(stamps.acquire - stamps.reading, 0.0)


async def measure(address: str, runs: int, report: Report) -> None:
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    locks = LockActivities()
    queue = f"lock-bench-{uuid.uuid4().hex[:8]}"
    runner = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "workflows", "bench", "__main__"
        )
    )
    async with Worker(
        client,
        task_queue=queue,
        workflows=[ResourceLock, LockAcquireProbe],
        activities=[locks.request, locks.state, locks.holder_status, clock],
        activity_executor=ThreadPoolExecutor(4),
        workflow_runner=runner,
    ):
        for _ in range(5):  # warm up: imports, the sandbox, the server's caches
            await one(client, queue, ecs_service("bench", "warm-up"))
        cases = {
            "a new lock each run": lambda n: ecs_service("bench", f"svc-{n}"),
            "the same lock each run": lambda n: ecs_service("bench", "api"),
        }
        for label, resource in cases.items():
            took = [await one(client, queue, resource(n)) for n in range(runs)]
            report.add(f"{label}: acquire p50", ms(percentile(took, 50)), "ms")
            report.add(f"{label}: acquire p99", ms(percentile(took, 99)), "ms", below=TARGET_P99_MS)
            report.add(f"{label}: acquire max", ms(max(took)), "ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    report = Report("lock_acquire")
    started = time.monotonic()
    with own_stack("lock", ["temporal"]) as (_, env):
        asyncio.run(measure(env["TEMPORAL_ADDRESS"], args.runs, report))
    print(f"done in {time.monotonic() - started:.0f}s")
    report.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
