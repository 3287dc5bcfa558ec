"""high-memory end to end on the Temporal dev server: the real worker and activities, the
sandbox (moto's ECS and CloudWatch; a task's memory is capped by the lower of its task's and
its container's own limit), the CLI."""

import json

import boto3
import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tests.e2e.conftest import as_approver, cli, gate_open

pytestmark = pytest.mark.timeout(240)


async def test_high_memory_lifts_the_container_limit_too_and_the_oom_kills_stop(
    worker: dict[str, str], sandbox: httpx.Client, dev_env: WorkflowEnvironment
) -> None:
    sandbox.post("/control/incidents/high-memory").raise_for_status()
    assert sandbox.get("/control/remediation").json()["memory"]["oom_killing"]
    started = await cli(
        as_approver(worker, "alice"),
        "start",
        "high-memory",
        "--requested-by",
        "alice",
        "--severity",
        "P2",
        "--set",
        "verify_interval_seconds=2",
        "--json",
    )
    assert started.returncode == 0, started.stderr
    workflow_id = json.loads(started.stdout)["workflow_id"]
    await gate_open(dev_env.client, workflow_id)
    approved = await cli(as_approver(worker, "bob"), "approve", workflow_id, "--as", "bob")
    assert approved.returncode == 0, approved.stderr
    done = await cli(worker, "status", workflow_id, "--wait", "--json")
    final = json.loads(done.stdout)
    assert final["outcome"] == "completed", done.stdout

    state = sandbox.get("/control/remediation").json()
    assert state["services"]["api"]["memory"] == 4096 and not state["memory"]["oom_killing"]
    ecs = boto3.client("ecs")
    [api] = ecs.describe_services(cluster="prod-revenue-context", services=["api"])["services"]
    task_def = ecs.describe_task_definition(taskDefinition=api["taskDefinition"])
    [container] = task_def["taskDefinition"]["containerDefinitions"]
    assert (task_def["taskDefinition"]["memory"], container["memory"]) == ("4096", 4096)
