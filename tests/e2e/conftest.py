"""What the end-to-end tests share: one real worker (every workflow and activity, as
worker.py builds it) on the session's dev server and stack, the CLI in its own process, the
gate wait, the replay of a finished run."""

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from settings import Settings
from stack.roster import ensure_intake_key, local_key
from tests.temporal_env import eventually, keep_history
from worker import INTERCEPTORS, build_worker
from workflows.models import RunbookStatus
from workflows.registry import WORKFLOWS

# Given to the worker only: the escalation test checks it never reaches a history.
ROUTING_KEY = "pd-routing-key-that-must-stay-secret"


@pytest.fixture(scope="package")
async def worker(
    dev_env: WorkflowEnvironment,
    stack_env: dict[str, str],
    aws_env: dict[str, str],
) -> AsyncIterator[dict[str, str]]:
    """A real worker in this process for every end-to-end test (each run has its own
    workflow id, the sandbox is reset around each test); returns the environment the CLI
    needs to reach it (RUNBOOK_TASK_QUEUE is its queue)."""
    env = {
        **stack_env,
        "RUNBOOK_TASK_QUEUE": f"e2e-{time.monotonic_ns()}",
        "LLM_BUDGET_MAX": "500",
        # The stack's intake key: what the intake signs (alarms, Slack clicks) is checked.
        "RUNBOOK_INTAKE_KEY": ensure_intake_key(Path(stack_env["RUNBOOK_STATE_DIR"])),
    }
    # A game-day worker: a run may shorten its gate's levels (the escalation test's 1 s).
    settings = Settings.model_validate(
        {**env, "PAGERDUTY_ROUTING_KEY": ROUTING_KEY, "RUNBOOK_GAME_DAY": "1"}
    )
    async with httpx.AsyncClient() as http, build_worker(dev_env.client, settings, http):
        target = dev_env.client.service_client.config.target_host
        yield {**os.environ, **env, "TEMPORAL_ADDRESS": target}


@pytest.fixture
def sandbox(sandbox: httpx.Client) -> httpx.Client:
    """The session's sandbox, reset, with ECS tasks that start in 0.3 s."""
    sandbox.post("/control/ecs", json={"task_start_seconds": 0.3}).raise_for_status()
    return sandbox


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


def as_approver(env: dict[str, str], name: str) -> dict[str, str]:
    """The CLI environment of a person: their own key, from the stack's local roster."""
    return {**env, "RUNBOOK_APPROVER_KEY": local_key(Path(env["RUNBOOK_STATE_DIR"]), name)}


async def gate_open(client: Client, workflow_id: str, timeout: float = 90) -> RunbookStatus:
    """The run's status once its gate is open or it has ended (asked of Temporal here: a CLI
    process a poll would cost a second each on a busy machine)."""
    handle = client.get_workflow_handle(workflow_id)

    async def opened() -> RunbookStatus | None:
        status = await handle.query("status", result_type=RunbookStatus)
        return status if status.pending_gate or status.phase in ("done", "failed") else None

    found: RunbookStatus = await eventually(opened, f"{workflow_id}: a gate", timeout, 0.2)
    return found


async def run_id_of(client: Client, workflow_id: str) -> str | None:
    """The latest run's id of `workflow_id`, None when it never ran."""
    try:
        return (await client.get_workflow_handle(workflow_id).describe()).run_id
    except RPCError:
        return None


async def new_run(client: Client, workflow_id: str, before: str | None) -> WorkflowHandle:
    """The run started after `before` (another process starts it: until then the id still
    names an earlier, finished run, which a status query would happily answer)."""

    async def started() -> str | None:
        now = await run_id_of(client, workflow_id)
        return now if now != before else None

    run_id = await eventually(started, f"{workflow_id}: a new run", 60, 0.2)
    return client.get_workflow_handle(workflow_id, run_id=run_id)


async def replay_and_keep(client: Client, workflow_id: str, name: str) -> str:
    """The run's history replays under the current code (and is kept when capturing);
    returns it as JSON."""
    handle = client.get_workflow_handle(workflow_id)
    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=WORKFLOWS, interceptors=INTERCEPTORS, data_converter=pydantic_data_converter
    )
    await replayer.replay_workflow(history)
    await keep_history(handle, name)
    return history.to_json()
