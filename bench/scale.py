"""Scale: a thousand incidents open at once, each waiting at its gate, on ONE worker.

    .venv/bin/python bench/scale.py [--incidents 1000] [--probes 20] [--concurrency 50]
        [--no-profile] [--json PATH]

Its own stack on free ports, with the real worker as its own process (the one the stack
starts: `python worker.py`). The procedure is db-failover: its action is one RDS call
(reboot with force-failover) that the sandbox completes after a heal delay set to 1 s, and
its verify polls every second, so the sandbox stays a small part of the work. `--incidents`
Multi-AZ instances (`bench-db-0000`, ...) are created in moto, then:

1. one db-failover a instance is started (P2, the CLI's client path, `--concurrency` at a
   time); time until every gate is open (visibility: `RunbookGate = "waiting"`);
2. with all of them waiting: the worker's resident memory (VmRSS of the worker process);
3. `--probes` of them approved one at a time (signed, as bob): approval accepted -> the
   first mutating activity started, from their histories, while the others wait;
4. the rest approved, `--concurrency` at a time: workflows completed per second, from the
   first approval to the last run closed;
5. where the time goes: CPU seconds of each process of the stack during each phase, and
   py-spy's samples of the worker (py-spy record --nonblocking, idle frames left out),
   summed by leaf function and by package.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Report,
    group_cpu_seconds,
    own_stack,
    percentile,
    rss_mb,
    unit_pid,
)
from bench.runs import decide, start, to_action
from client.runs import query_status
from settings import temporal_client
from stack.local import Stack
from stack.roster import local_key
from workflows.models import RunbookResult
from workflows.registry import PROCEDURES

PROCEDURE = PROCEDURES["db-failover"]
RSS_TARGET_MB = 400
ACTION_P99_TARGET = 0.25
UNITS = ("worker", "temporal", "sandbox", "postgres", "redis", "kafka")


def seed_instances(count: int) -> list[str]:
    rds = boto3.client("rds")
    names = [f"bench-db-{i:04d}" for i in range(count)]

    def create(name: str) -> None:
        rds.create_db_instance(
            DBInstanceIdentifier=name,
            DBInstanceClass="db.t3.micro",
            Engine="postgres",
            MultiAZ=True,
            AvailabilityZone="us-east-1a",
            MasterUsername="bench",
            MasterUserPassword="bench-password",
            AllocatedStorage=20,
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, names))
    return names


class CpuMeter:
    """CPU seconds used by each unit of the stack between `mark()` and `take()`."""

    def __init__(self, stack: Stack) -> None:
        self.pids = {u: pid for u in UNITS if (pid := stack.running_pid(u)) is not None}
        self.before: dict[str, float] = {}
        self.started = 0.0

    def mark(self) -> None:
        self.before = {u: group_cpu_seconds(pid) for u, pid in self.pids.items()}
        self.started = time.monotonic()

    def take(self) -> tuple[float, dict[str, float]]:
        wall = time.monotonic() - self.started
        used = {u: group_cpu_seconds(pid) - self.before[u] for u, pid in self.pids.items()}
        return wall, used


def cpu_text(wall: float, used: dict[str, float]) -> str:
    total = sum(used.values())
    parts = ", ".join(
        f"{u} {s:.0f}s ({s / total:.0%})" for u, s in sorted(used.items(), key=lambda x: -x[1])
    )
    return f"{wall:.0f}s wall, {total:.0f} CPU-s of 2 cores' {2 * wall:.0f}: {parts}"


class Profiler:
    """py-spy on the worker for one phase (none when py-spy is missing or not permitted)."""

    def __init__(self, pid: int, out: Path, enabled: bool) -> None:
        self.pid, self.out = pid, out
        self.proc: subprocess.Popen[bytes] | None = None
        self.exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.enabled = enabled and Path(self.exe).exists()

    def __enter__(self) -> Profiler:
        if self.enabled:
            argv = [self.exe, "record", "--pid", str(self.pid), "--format", "raw"]
            argv += ["--output", str(self.out), "--rate", "50", "--nonblocking", "--gil"]
            argv += ["--duration"]
            argv += ["900"]
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
            try:
                _, err = self.proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                err = b""
            if self.proc.returncode not in (0, -signal.SIGINT) and not self.out.exists():
                print(f"py-spy failed: {err.decode(errors='replace')[-400:]}", flush=True)


PACKAGES = (
    ("temporalio/worker/workflow_sandbox", "temporal workflow sandbox"),
    ("temporalio/worker/_workflow_instance", "temporal workflow code"),
    ("temporalio/bridge", "temporal core bridge"),
    ("temporalio/converter", "temporal payload converter"),
    ("temporalio/contrib/pydantic", "temporal payload converter"),
    ("temporalio/worker/_activity", "temporal activity worker"),
    ("temporalio/worker/_workflow.py", "temporal workflow worker"),
    ("temporalio", "temporal other"),
    ("pydantic", "pydantic"),
    ("botocore", "boto3/botocore"),
    ("boto3", "boto3/botocore"),
    ("urllib3", "boto3/botocore"),
    ("httpx", "httpx"),
    ("httpcore", "httpx"),
    ("psycopg", "psycopg"),
    ("/workflows/", "runbook workflows"),
    ("/activities/", "runbook activities"),
    ("asyncio", "asyncio"),
    ("concurrent/futures", "thread pools"),
    ("threading.py", "thread pools"),
    ("logging", "logging"),
    ("importlib", "imports"),
    ("<frozen", "imports"),
)


def package(frame: str) -> str:
    for needle, name in PACKAGES:
        if needle in frame:
            return name
    return "other"


def profile_text(path: Path, top: int = 12) -> list[str]:
    """py-spy raw output (`frame;frame;... count`): self samples by leaf function, and
    inclusive samples by the first package a stack enters from the worker's own loop."""
    if not path.exists():
        return ["no profile (--no-profile, or py-spy missing or not permitted)"]
    leaves: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaves[frames[-1]] += n
        packages[package(frames[-1])] += n
        for name in {package(f) for f in frames} - {"other"}:
            inclusive[name] += n
    if not total:
        return ["no samples"]
    lines = [f"{total} samples (50/s, the thread holding the GIL); self time by package:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in packages.most_common(top)]
    lines.append("inclusive (any frame of the stack):")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    lines.append("self time by function:")
    lines += [f"  {n / total:6.1%}  {name[:110]}" for name, n in leaves.most_common(top)]
    return lines


async def wait_count(client: Client, query: str, want: int, timeout: float) -> float:
    """Seconds until visibility counts `want` workflows matching `query`."""
    started = time.monotonic()
    while True:
        got = (await client.count_workflows(query)).count
        if got >= want or time.monotonic() - started > timeout:
            if got < want:
                print(f"    only {got}/{want} for {query!r} after {timeout:.0f}s", flush=True)
            return time.monotonic() - started
        await asyncio.sleep(0.5)


async def accept(handle: WorkflowHandle, key: str, gate: str, tries: int = 3) -> None:
    """Approve, returning once the Update is accepted; an RPC timeout on a busy machine is
    tried again (a decision already taken is refused by the workflow, so nothing doubles)."""
    for attempt in range(tries):
        try:
            await decide(handle, key, approve=True, wait=False, gate=gate)
            return
        except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError):
            if attempt == tries - 1:
                raise
            await asyncio.sleep(1)


async def bounded(limit: int, jobs: list[Any]) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def run(job: Any) -> Any:
        async with gate:
            return await job

    return list(await asyncio.gather(*(run(j) for j in jobs)))


async def measure(
    args: argparse.Namespace, stack: Stack, env: dict[str, str], report: Report, tmp: Path
) -> None:
    client = await temporal_client()
    key = local_key(Path(env["RUNBOOK_STATE_DIR"]), "bob")
    worker = unit_pid(stack, "worker")
    meter = CpuMeter(stack)
    n = args.incidents
    async with httpx.AsyncClient(base_url=env["SANDBOX_URL"], timeout=30) as sandbox:
        (await sandbox.post("/control/heal-delay", json={"seconds": 1})).raise_for_status()
    started = time.monotonic()
    names = await asyncio.to_thread(seed_instances, n)
    print(f"{n} Multi-AZ instances created in moto in {time.monotonic() - started:.0f}s")
    idle_rss = rss_mb(worker)
    report.add("worker RSS, idle", idle_rss, "MB")

    # 1. every incident to its gate
    sets = ["poll_seconds=1"]
    meter.mark()
    with Profiler(worker, tmp / "open.txt", args.profile):
        t0 = time.monotonic()
        starts = [
            start(client, PROCEDURE, [f"db_instance_id={name}", *sets], "P2") for name in names
        ]
        handles: list[WorkflowHandle] = [h for h, _ in await bounded(args.concurrency, starts)]
        start_wall = time.monotonic() - t0
        waiting = 'ExecutionStatus = "Running" AND RunbookGate = "waiting"'
        opened = await wait_count(client, waiting, n, timeout=args.timeout)
    wall, used = meter.take()
    report.add(f"{n} runs started (CLI client path, {args.concurrency} at a time)", start_wall, "s")
    report.add(f"{n} runs: start -> every gate open", opened, "s")
    report.add("gates opened per second", n / opened, "/s")
    report.note(f"opening {n} gates: {cpu_text(wall, used)}")
    for line in profile_text(tmp / "open.txt"):
        report.note(f"worker while opening the gates: {line}")

    # 2. memory while they all wait
    await asyncio.sleep(2)
    rss = rss_mb(worker)
    report.add(f"worker RSS, {n} runs waiting at their gates", rss, "MB", below=RSS_TARGET_MB)
    report.add("temporal dev server RSS (for scale)", rss_mb(unit_pid(stack, "temporal")), "MB")

    # 3. approval to action while the others wait
    probes: list[float] = []
    for handle in handles[: args.probes]:
        await decide(handle, key, approve=True)
        run = await to_action(handle)
        if run.started is not None:
            probes.append(run.started)
    if probes:
        label = f"approval -> action started, {n - args.probes} others waiting"
        report.add(f"{label}, p50", percentile(probes, 50), "s")
        report.add(f"{label}, p99", percentile(probes, 99), "s", below=ACTION_P99_TARGET)

    # 4. approve the rest: throughput. Signed for the gate every run has open, without
    # asking each run (as `runbook approve` does): under this load status queries took over
    # the CLI's 10 s query timeout.
    rest = handles[args.probes :]
    status = await query_status(rest[0])
    assert status.pending_gate is not None
    gate = status.pending_gate.gate
    meter.mark()
    with Profiler(worker, tmp / "approve.txt", args.profile):
        t0 = time.monotonic()
        await bounded(args.concurrency, [accept(h, key, gate) for h in rest])
        approved = time.monotonic() - t0
        closed = 'WorkflowType = "DatabaseFailover" AND ExecutionStatus = "Completed"'
        await wait_count(client, closed, n, timeout=args.timeout)
        done = time.monotonic() - t0
    wall, used = meter.take()
    report.add(f"{len(rest)} approvals sent ({args.concurrency} at a time)", approved, "s")
    report.add(f"{len(rest)} approved runs: first approval -> last completed", done, "s")
    report.add("throughput: workflows completed per second", len(rest) / done, "/s")
    report.note(f"approving and completing {len(rest)}: {cpu_text(wall, used)}")
    for line in profile_text(tmp / "approve.txt"):
        report.note(f"worker while completing: {line}")
    report.add("worker RSS at the end", rss_mb(worker), "MB")
    report.note(f"steps of the approved runs (p50 / max s): {await steps(client, rest[:50])}")
    for line in log_problems(stack.state_dir / "logs" / "worker.log"):
        report.note(f"worker log: {line}")


def log_problems(path: Path, top: int = 5) -> list[str]:
    """The worker's most frequent WARNING/ERROR lines (retried activities say why)."""
    seen: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        if " WARNING " in line or " ERROR " in line:
            text = line.split(" ", 2)[-1]  # without the timestamp
            seen[text[:160]] += 1
    return [f"{n}x {text}" for text, n in seen.most_common(top)] or ["no warnings"]


async def steps(client: Client, handles: list[WorkflowHandle]) -> str:
    """Each timeline step's duration across `handles`' results."""
    took: dict[str, list[float]] = {}
    for handle in handles:
        typed = client.get_workflow_handle(handle.id, result_type=RunbookResult)
        result = await typed.result()
        for step in result.timeline:
            if step.ended_at and step.ended_at > step.started_at:
                name = step.name.replace(result.resource, "<db>")
                took.setdefault(name, []).append((step.ended_at - step.started_at).total_seconds())
    return "; ".join(f"{name} {percentile(v, 50):.1f}/{max(v):.1f}" for name, v in took.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=900, help="seconds for each phase")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    report = Report("scale")
    report.note(f"db-failover, {args.incidents} incidents on one worker (pid of `worker.py`)")
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="runbook-bench-profile-"))
    try:
        # moto takes a snapshot of every new instance and refuses more than its limit
        limit = {"MOTO_RDS_SNAPSHOT_LIMIT": str(2 * args.incidents + 100)}
        with own_stack("scale", ["worker"], limit) as (stack, env):
            os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
            asyncio.run(measure(args, stack, env, report, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"done in {time.monotonic() - started:.0f}s")
    report.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
