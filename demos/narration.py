"""What every demo shares: say what happens, start a run, follow its timeline, approve as bob."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from client.decisions import make_signed, send_decision
from client.render import run_link
from client.runs import query_status, start_procedure
from settings import get_settings
from stack.roster import local_key
from workflows.models import RunbookInput, RunbookResult, RunbookStatus
from workflows.registry import PROCEDURES


def say(text: str) -> None:
    print(f"\n>>> {text}", flush=True)


def print_steps(status: RunbookStatus, shown: set[int]) -> None:
    """Print the finished steps not shown yet (by their place in the timeline: parallel
    checks finish in any order) and add them to `shown`."""
    for index, step in enumerate(status.timeline):
        if step.outcome != "running" and index not in shown:
            shown.add(index)
            detail = f": {step.detail}" if step.detail else ""
            print(f"    {step.outcome:<8} {step.name}{detail}")


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


async def until(
    handle: WorkflowHandle, ready: Callable[[RunbookStatus], bool], timeout: float = 180
) -> RunbookStatus:
    """The status once `ready` holds, the run has ended, or the timeout has passed."""
    deadline = time.monotonic() + timeout
    while True:
        status = await status_of(handle, deadline)
        if ready(status) or status.phase in ("done", "failed") or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.5)


async def follow(handle: WorkflowHandle, shown: set[int]) -> RunbookResult:
    """Print timeline steps as they finish, until the run ends; returns its result."""
    while True:
        status = await status_of(handle, time.monotonic() + 60)
        print_steps(status, shown)
        if status.phase in ("done", "failed"):
            return RunbookResult.model_validate(await handle.result())
        await asyncio.sleep(1)


async def start(procedure: str, client: Client, inp: RunbookInput) -> WorkflowHandle:
    """Start as `runbook start` does, signed with the requester's own key (the stack's)."""
    key = local_key(get_settings().state_dir, inp.requested_by)
    handle = await start_procedure(client, PROCEDURES[procedure], inp, key=key)
    print(f"    workflow {handle.id}\n    {run_link(handle.id, handle.result_run_id or '')}")
    return handle


async def inject(sandbox: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    """Reset the sandbox, make ECS tasks start in a second, inject the incident."""
    (await sandbox.post("/control/reset")).raise_for_status()
    (await sandbox.post("/control/ecs", json={"task_start_seconds": 1})).raise_for_status()
    (await sandbox.post(path, json=body)).raise_for_status()


async def gate_opened(handle: WorkflowHandle) -> RunbookStatus | None:
    """The status once the gate is open; None (and why, printed) when the run ended first."""
    status = await until(handle, lambda s: s.pending_gate is not None)
    if status.pending_gate is None:
        print(f"    no gate opened: phase {status.phase}")
        return None
    return status


async def approve(
    handle: WorkflowHandle, status: RunbookStatus, params: dict[str, str] | None = None
) -> set[int]:
    """Print the plan, sign bob's approval (with `params`) and send it; returns the steps
    shown so far."""
    shown: set[int] = set()
    print_steps(status, shown)
    gate = status.pending_gate
    assert gate is not None
    print(f"    plan: {gate.summary}")
    for step in gate.plan:
        print(f"      - {step}")
    for spec in gate.params:
        bounds = f"{spec.minimum:g} to {spec.maximum:g}, default {spec.default:g}"
        print(f"    asks for {spec.name}: {bounds}")
    given = ", ".join(f"{k}={v}" for k, v in (params or {}).items())
    say(f"bob (a second person) approves with his own key{f' and {given}' if given else ''}")
    desc = await handle.describe()
    key = local_key(get_settings().state_dir, "bob")
    signed = make_signed(desc.id, desc.run_id, gate.gate, "bob", key, params=params)
    await send_decision(handle, signed)
    return shown


async def control_state(sandbox: httpx.AsyncClient, path: str) -> dict[str, Any]:
    """A JSON view of the sandbox's control API (`/control/diagnosis`, ...)."""
    reply = await sandbox.get(path)
    reply.raise_for_status()
    state: dict[str, Any] = reply.json()
    return state
