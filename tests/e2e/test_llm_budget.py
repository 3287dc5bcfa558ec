"""llm-budget end to end on the Temporal dev server: the real worker and activities, the
sandbox (moto's Secrets Manager and ECS, Valkey, /metrics), the CLI."""

import json
from typing import Any

import boto3
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.testing import WorkflowEnvironment

from tests.e2e.conftest import as_approver, cli, gate_open, replay_and_keep

pytestmark = pytest.mark.timeout(240)
SECRET = "prod/revenue-context/config"


def gauges(sandbox: httpx.Client) -> dict[str, float]:
    return {
        s.name: s.value
        for family in text_string_to_metric_families(sandbox.get("/metrics").text)
        for s in family.samples
    }


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
        as_approver(worker, "alice"),  # signed: her request, proven
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
    gate = (await gate_open(dev_env.client, workflow_id)).pending_gate
    assert gate is not None
    [spec] = gate.params
    assert (spec.minimum, spec.maximum, spec.default) == (1, 500, 200)

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

    history = await replay_and_keep(dev_env.client, workflow_id, "llm_budget_e2e_raised")
    leaked = [k for k, v in before.items() if k != "LLM_DAILY_BUDGET" and v in history]
    assert not leaked, f"secret values in the history: {leaked}"
    assert not [k for k, v in before.items() if k != "LLM_DAILY_BUDGET" and v in done.stdout]
