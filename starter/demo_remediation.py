"""`runbook demo llm-budget | high-memory | rollback | cert-renewal`: inject the incident in
the sandbox, run the runbook on the embedded stack's worker, and show the real effect (the
budget in force, the memory of the running revision, the image `/health` reports, the
certificate the HTTPS listener serves)."""

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import boto3
import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from settings import get_settings
from starter.approvers import local_key
from starter.cli import make_signed, query_status, run_link, start_procedure
from workflows.high_memory import HighMemoryInput
from workflows.llm_budget import LlmBudgetInput
from workflows.models import RunbookResult, RunbookStatus
from workflows.registry import PROCEDURES

CONFIG_SECRET = "prod/revenue-context/config"


# ---- helpers (small and local: starter/demo.py imports this module for its DEMOS) ---------


def say(text: str) -> None:
    print(f"\n>>> {text}", flush=True)


def print_steps(status: RunbookStatus, shown: set[int]) -> None:
    """Print the finished steps not shown yet (parallel checks finish in any order)."""
    for index, step in enumerate(status.timeline):
        if step.outcome != "running" and index not in shown:
            shown.add(index)
            detail = f": {step.detail}" if step.detail else ""
            print(f"    {step.outcome:<8} {step.name}{detail}")


async def status_of(handle: WorkflowHandle, deadline: float) -> RunbookStatus:
    """The status query, asked again while it times out (a busy machine)."""
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


async def start(procedure: str, client: Client, inp: BaseModel) -> WorkflowHandle:
    handle = await start_procedure(client, PROCEDURES[procedure], inp)
    print(f"    workflow {handle.id}\n    {run_link(handle.id, handle.result_run_id or '')}")
    return handle


async def inject(sandbox: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    """Reset the sandbox, make ECS tasks start in a second, inject the incident."""
    (await sandbox.post("/control/reset")).raise_for_status()
    (await sandbox.post("/control/ecs", json={"task_start_seconds": 1})).raise_for_status()
    (await sandbox.post(path, json=body)).raise_for_status()


async def approve(
    handle: WorkflowHandle, status: RunbookStatus, params: dict[str, str] | None = None
) -> set[int]:
    """Print the plan, sign bob's approval (with `params`) and send it."""
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
    await handle.execute_update("approve", signed)
    return shown


async def llm_gauges(sandbox: httpx.AsyncClient) -> dict[str, float]:
    text = (await sandbox.get("/metrics")).text
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("llm_budget")
    }


def print_gauges(gauges: dict[str, float]) -> None:
    print("    GET /metrics | grep llm_budget")
    for name, value in sorted(gauges.items()):
        print(f"      {name} {value:g}")


def secret_keys() -> list[str]:
    """The config secret's key names (never its values)."""
    raw = boto3.client("secretsmanager").get_secret_value(SecretId=CONFIG_SECRET)
    return sorted(json.loads(raw["SecretString"]))


async def demo_llm_budget(client: Client, sandbox: httpx.AsyncClient) -> bool:
    say("Injecting the incident: a campaign burst spent today's LLM budget; calls are refused")
    await inject(sandbox, "/control/incidents/llm-budget", {})
    # The burst goes on after the fix, fast enough for the 80% alert to show in the demo.
    body: dict[str, Any] = {"calls_per_minute": 900, "cost_per_call": 0.1}
    (await sandbox.post("/control/llm", json=body)).raise_for_status()
    print_gauges(await llm_gauges(sandbox))
    keys_before = secret_keys()
    print(f"    {CONFIG_SECRET} holds {len(keys_before)} keys: {', '.join(keys_before)}")

    say("alice (on call) starts llm-budget, severity P1, watching spend every 5 s for 1 min")
    inp = LlmBudgetInput(
        requested_by="alice",
        trigger="cli",
        severity="P1",
        watch_minutes=1,
        watch_interval_seconds=5,
    )
    handle = await start("llm-budget", client, inp)
    say("Diagnosing in parallel: spend in Redis, /metrics, call rate, the secret, ECS")
    status = await until(handle, lambda s: s.pending_gate is not None)
    if status.pending_gate is None:
        print(f"    no gate opened: phase {status.phase}")
        return False
    shown = await approve(handle, status, {"daily_budget": "200"})

    say("Setting the one key, redeploying api, verifying, then watching the spend")
    result: RunbookResult = await follow(handle, shown)
    gauges = await llm_gauges(sandbox)
    keys_after = secret_keys()
    say(f"Done: {result.outcome}. {result.summary}")
    print_gauges(gauges)
    print(f"    {CONFIG_SECRET} still holds {len(keys_after)} keys: {', '.join(keys_after)}")
    return (
        result.outcome == "completed"
        and gauges.get("llm_budget_daily_usd") == 200
        and keys_after == keys_before
    )


# ---- high-memory ---------------------------------------------------------------------------


async def remediation_state(sandbox: httpx.AsyncClient) -> dict[str, Any]:
    reply = await sandbox.get("/control/remediation")
    reply.raise_for_status()
    state: dict[str, Any] = reply.json()
    return state


async def demo_high_memory(client: Client, sandbox: httpx.AsyncClient) -> bool:
    say("Injecting the incident: api needs more memory than its 2048 MiB tasks; ECS kills them")
    await inject(sandbox, "/control/incidents/high-memory", {})
    before = await remediation_state(sandbox)
    api = before["services"]["api"]
    print(f"    api runs {api['image']} with {api['memory']} MiB; OOM kills: 3 stopped tasks")

    say("alice (on call) starts high-memory for api, severity P2")
    inp = HighMemoryInput(
        requested_by="alice", trigger="cli", severity="P2", verify_interval_seconds=5
    )
    handle = await start("high-memory", client, inp)
    say("Diagnosing in parallel: ECS service, MemoryUtilized (last hour), stopped tasks")
    status = await until(handle, lambda s: s.pending_gate is not None)
    if status.pending_gate is None:
        print(f"    no gate opened: phase {status.phase}")
        return False
    shown = await approve(handle, status)

    say("Registering the revision, updating the service, following the rollout, verifying")
    result: RunbookResult = await follow(handle, shown)
    after = (await remediation_state(sandbox))["services"]["api"]
    say(f"Done: {result.outcome}. {result.summary}")
    print(f"    api now runs {after['image']} with {after['memory']} MiB")
    return result.outcome == "completed" and after["memory"] == 4096
