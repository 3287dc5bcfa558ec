"""`runbook demo kafka-lag | api-errors | triage`: inject the incident in the sandbox, run the
runbook on the embedded stack's worker, and show the real effect (lag drains, 5xx share falls).

The helpers here are small on purpose: starter/demo.py imports this module for its DEMOS, so
this module does not import starter/demo.py back."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import BaseModel
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from settings import get_settings
from starter.approvers import local_key
from starter.cli import make_signed, query_status, render_status, run_link, start_procedure
from workflows.api_errors import ApiErrorsInput
from workflows.kafka_lag import KafkaLagInput
from workflows.models import RunbookResult, RunbookStatus
from workflows.registry import PROCEDURES
from workflows.triage import TriageInput

# 2 context-engine workers take 50/s of the 60/s arriving: the lag grows until more run.
# (Modest rates: the sandbox's consumers share one Python process with everything else.)
KAFKA_INCIDENT = {
    "produce_per_second": 60,
    "per_worker_per_second": 25,
    "backlog": 1500,
    "dlq_messages": 25,
    "lag_threshold": 300,
}


def say(text: str) -> None:
    print(f"\n>>> {text}", flush=True)


def print_steps(status: RunbookStatus, shown: set[int]) -> None:
    """Print the finished steps not shown yet (by their place in the timeline: parallel
    checks finish in any order) and add them to `shown`."""
    for index, step in enumerate(status.timeline):
        if step.outcome != "running" and index not in shown:
            shown.add(index)
            print(
                f"    {step.outcome:<8} {step.name}" + (f": {step.detail}" if step.detail else "")
            )


async def until(
    handle: WorkflowHandle, ready: Callable[[RunbookStatus], bool], timeout: float = 120
) -> RunbookStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = await status_of(handle, deadline)
        if ready(status) or status.phase in ("done", "failed") or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.5)


async def status_of(handle: WorkflowHandle, deadline: float) -> RunbookStatus:
    """The status query, asked again while it times out (a worker that is just starting, or
    a busy machine) until the deadline."""
    while True:
        try:
            return await query_status(handle)
        except RPCError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


async def follow(handle: WorkflowHandle, shown: set[int]) -> RunbookResult:
    """Print timeline steps as they finish, until the run ends; returns its result."""
    while True:
        status = await status_of(handle, time.monotonic() + 60)
        print_steps(status, shown)
        if status.phase in ("done", "failed"):
            return RunbookResult.model_validate(await handle.result())
        await asyncio.sleep(1)


async def sandbox_state(sandbox: httpx.AsyncClient) -> dict[str, Any]:
    reply = await sandbox.get("/control/diagnosis")
    reply.raise_for_status()
    state: dict[str, Any] = reply.json()
    return state


async def start(procedure: str, client: Client, inp: BaseModel) -> WorkflowHandle:
    handle = await start_procedure(client, PROCEDURES[procedure], inp)
    print(f"    workflow {handle.id}\n    {run_link(handle.id, handle.result_run_id or '')}")
    return handle


async def approve_as_bob(handle: WorkflowHandle, status: RunbookStatus) -> set[int]:
    """Print the plan, sign bob's approval and send it; returns the steps shown so far."""
    shown: set[int] = set()
    print_steps(status, shown)
    gate = status.pending_gate
    assert gate is not None
    print(f"    plan: {gate.summary}")
    for step in gate.plan:
        print(f"      - {step}")
    say("bob (a second person) approves with his own key")
    desc = await handle.describe()
    key = local_key(get_settings().state_dir, "bob")
    await handle.execute_update("approve", make_signed(desc.id, desc.run_id, gate.gate, "bob", key))
    return shown


async def inject(sandbox: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    (await sandbox.post("/control/reset")).raise_for_status()
    (await sandbox.post("/control/ecs", json={"task_start_seconds": 1})).raise_for_status()
    (await sandbox.post(path, json=body)).raise_for_status()


async def workers_health(sandbox: httpx.AsyncClient, want: int, timeout: float = 60) -> int:
    """GET /health/workers until it answers `want` (the sandbox measures lag every second)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await sandbox.get("/health/workers")
        body = reply.json()
        if reply.status_code == want or time.monotonic() > deadline:
            print(
                f"    GET /health/workers -> {reply.status_code}: {body['lag']} behind, "
                f"{body['workers']} workers"
            )
            return reply.status_code
        await asyncio.sleep(1)


# ---- kafka-lag ---------------------------------------------------------------------------


async def demo_kafka_lag(client: Client, sandbox: httpx.AsyncClient) -> bool:
    say("Injecting the incident: 60 signals/s arrive, 2 context-engine workers take 25/s each")
    await inject(sandbox, "/control/incidents/kafka-lag", KAFKA_INCIDENT)
    await workers_health(sandbox, 503)

    say("alice (on call) starts the kafka-lag runbook, severity P2 (as its alarm does)")
    inp = KafkaLagInput(
        requested_by="alice",
        trigger="cli",
        severity="P2",
        sample_seconds=2,
        settle_seconds=8,
        poll_seconds=1,
        drain_target_seconds=30,
    )
    handle = await start("kafka-lag", client, inp)
    say("Diagnosing in parallel: lag per partition, ECS, /health/workers, ERROR logs, the DLQ")
    status = await until(handle, lambda s: s.pending_gate is not None)
    if status.pending_gate is None:
        print(render_status(status, "RUNNING"))
        return False
    shown = await approve_as_bob(handle, status)

    say("Scaling context-engine, waiting for the tasks, measuring the lag over the settle window")
    result = await follow(handle, shown)
    running = (await sandbox_state(sandbox))["running"]["context-engine"]
    say(f"{running} context-engine tasks run; the sandbox's consumers drain the backlog")
    await workers_health(sandbox, 200, timeout=45)
    now = (await sandbox_state(sandbox))["kafka"]["lag"]
    last = last_lag(result)
    say(f"Done: {result.outcome}. {result.summary}; {now} behind now")
    print(run_link(handle.id, handle.result_run_id or ""))
    return result.outcome == "completed" and "falling" in result.summary and now < last


def last_lag(result: RunbookResult) -> int:
    """The lag the run measured last (its "lag after <settle>s" step: "<n> behind, ...")."""
    [step] = [
        s
        for s in result.timeline
        if s.name.startswith("lag after ") and s.name != "lag after scaling"
    ]
    return int(step.detail.split()[0])


# ---- api-errors --------------------------------------------------------------------------


async def demo_api_errors(client: Client, sandbox: httpx.AsyncClient) -> bool:
    say("Injecting the incident: api is short of capacity (tasks OOM-killed, one unhealthy)")
    await inject(sandbox, "/control/incidents/api-errors", {"cause": "capacity"})
    share = (await sandbox_state(sandbox))["error_share"]
    print(f"    the service answers {share:.0%} of requests with 503")

    say("alice (on call) starts the api-errors runbook, severity P1")
    inp = ApiErrorsInput(
        requested_by="alice", trigger="cli", severity="P1", error_window_seconds=5, poll_seconds=1
    )
    handle = await start("api-errors", client, inp)
    say(
        "Diagnosing in parallel: ECS tasks, ERROR/CRITICAL logs, /health/detailed, RDS CPU, "
        "Redis INFO stats, circuit breakers, the 5xx share"
    )
    status = await until(handle, lambda s: s.pending_gate is not None)
    if status.pending_gate is None:
        print(render_status(status, "RUNNING"))
        return False
    shown = await approve_as_bob(handle, status)

    say("Scaling api, waiting for the tasks, measuring the 5xx share until it falls")
    result = await follow(handle, shown)
    state = await sandbox_state(sandbox)
    say(
        f"Done: {result.outcome}. {state['running']['api']} api tasks; the service now answers "
        f"{state['error_share']:.1%} with 503"
    )
    print(f"    {result.summary}\n    {run_link(handle.id, handle.result_run_id or '')}")
    return result.outcome == "completed" and state["error_share"] < inp.error_rate_threshold


# ---- triage ------------------------------------------------------------------------------


async def demo_triage(client: Client, sandbox: httpx.AsyncClient) -> bool:
    say("Injecting an incident without saying which: consumer lag on context-engine")
    await inject(sandbox, "/control/incidents/kafka-lag", KAFKA_INCIDENT)
    await workers_health(sandbox, 503)

    say("alice runs triage: the runbook's Common Commands in one parallel, read-only run")
    inp = TriageInput(requested_by="alice", trigger="cli", severity="P2")
    handle = await start("triage", client, inp)
    result = await follow(handle, set())
    say("Findings")
    for finding in result.findings:
        print(f"    {finding.verdict:<11} {finding.check}: {finding.summary[:110]}")
    say(f"Done: {result.summary}")
    for command in result.plan:
        print(f"    next: {command}")
    print(f"    {run_link(handle.id, handle.result_run_id or '')}")
    return result.outcome == "completed" and result.summary.startswith("Suggested: kafka-lag")
