"""End to end on the Temporal dev server for llm-budget, high-memory, rollback and
cert-renewal: the real worker and activities, the sandbox (moto, Valkey), the CLI."""

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from settings import Settings
from stack.roster import local_key
from tests.temporal_env import keep_history
from worker import INTERCEPTORS, build_worker
from workflows.registry import WORKFLOWS

pytestmark = pytest.mark.timeout(240)
SECRET = "prod/revenue-context/config"


@pytest.fixture
async def worker(
    dev_env: WorkflowEnvironment,
    stack_env: dict[str, str],
    aws_env: dict[str, str],
) -> AsyncIterator[dict[str, str]]:
    """A real worker in this process; returns the environment the CLI needs to reach it."""
    env = {
        **stack_env,
        "RUNBOOK_TASK_QUEUE": f"e2e-{time.monotonic_ns()}",
        "LLM_BUDGET_MAX": "500",
    }
    settings = Settings.model_validate(env)
    async with httpx.AsyncClient() as http, build_worker(dev_env.client, settings, http):
        target = dev_env.client.service_client.config.target_host
        yield {**os.environ, **env, "TEMPORAL_ADDRESS": target}


@pytest.fixture
def sandbox(sandbox: httpx.Client) -> httpx.Client:
    sandbox.post("/control/ecs", json={"task_start_seconds": 0.5}).raise_for_status()
    return sandbox


def as_approver(env: dict[str, str], name: str) -> dict[str, str]:
    return {**env, "RUNBOOK_APPROVER_KEY": local_key(Path(env["RUNBOOK_STATE_DIR"]), name)}


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process; in a thread, so the worker in this event loop runs on."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def wait_for_gate(env: dict[str, str], workflow_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = await cli(env, "status", workflow_id, "--json")
        status = json.loads(out.stdout) if out.returncode == 0 else {}
        if status.get("pending_gate") or status.get("phase") in ("done", "failed"):
            return status
        await asyncio.sleep(0.5)
    raise AssertionError(f"{workflow_id}: no gate within {timeout}s")


def gauges(sandbox: httpx.Client) -> dict[str, float]:
    return {
        s.name: s.value
        for family in text_string_to_metric_families(sandbox.get("/metrics").text)
        for s in family.samples
    }


async def replay_and_keep(dev_env: WorkflowEnvironment, workflow_id: str, name: str) -> str:
    handle = dev_env.client.get_workflow_handle(workflow_id)
    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=WORKFLOWS, interceptors=INTERCEPTORS, data_converter=pydantic_data_converter
    )
    await replayer.replay_workflow(history)
    await keep_history(handle, name)
    return history.to_json()


def secret_values() -> dict[str, Any]:
    raw = boto3.client("secretsmanager").get_secret_value(SecretId=SECRET)
    return dict(json.loads(raw["SecretString"]))


async def test_llm_budget_raised_by_cli_keeps_other_keys_and_is_in_force(
    worker: dict[str, str], sandbox: httpx.Client, dev_env: WorkflowEnvironment
) -> None:
    sandbox.post("/control/incidents/llm-budget").raise_for_status()
    sandbox.post("/control/llm", json={"cost_per_call": 0.1}).raise_for_status()
    before = secret_values()
    assert gauges(sandbox)["llm_budget_exhausted"] == 1

    started = await cli(
        worker,
        "start",
        "llm-budget",
        "--requested-by",
        "alice",
        "--set",
        "watch_minutes=0.1",
        "--set",
        "watch_interval_seconds=2",
        "--json",
    )
    assert started.returncode == 0, started.stderr
    workflow_id = json.loads(started.stdout)["workflow_id"]
    assert workflow_id == "llm-budget/production/prod/revenue-context/config"
    status = await wait_for_gate(worker, workflow_id)
    [spec] = status["pending_gate"]["params"]
    assert (spec["minimum"], spec["maximum"], spec["default"]) == (1, 500, 200)

    too_much = await cli(
        as_approver(worker, "bob"),
        "approve",
        workflow_id,
        "--as",
        "bob",
        "--set",
        "daily_budget=900",
    )
    assert too_much.returncode == 2 and "allowed: 1 to 500" in too_much.stderr
    approved = await cli(
        as_approver(worker, "bob"),
        "approve",
        workflow_id,
        "--as",
        "bob",
        "--set",
        "daily_budget=150",
    )
    assert approved.returncode == 0, approved.stderr
    done = await cli(worker, "status", workflow_id, "--wait", "--json")
    final = json.loads(done.stdout)
    assert final["state"] == "COMPLETED" and final["outcome"] == "completed", done.stdout

    after = secret_values()
    assert after == {**before, "LLM_DAILY_BUDGET": "150.0"}  # every other key kept
    now = gauges(sandbox)
    assert now["llm_budget_daily_usd"] == 150 and now["llm_budget_exhausted"] == 0
    steps = {s["name"]: s for s in final["timeline"]}
    assert steps["rollout api"]["detail"].startswith("COMPLETED")
    assert steps["watch spend"]["outcome"] == "ok"

    history = await replay_and_keep(dev_env, workflow_id, "llm_budget_e2e_raised")
    leaked = [k for k, v in before.items() if k != "LLM_DAILY_BUDGET" and v in history]
    assert not leaked, f"secret values in the history: {leaked}"
    assert not [k for k, v in before.items() if k != "LLM_DAILY_BUDGET" and v in done.stdout]
