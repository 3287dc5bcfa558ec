"""Rollback end to end by scripts/rollback.sh and the CLI on the Temporal dev server: the
real worker and activities, the sandbox's bad deploy in moto, moto's recorder to count the
updates that reached AWS."""

import asyncio
import contextlib
import os
import time
from collections import Counter
from pathlib import Path

import boto3
import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from tests.e2e.conftest import as_approver, cli, gate_open, new_run, replay_and_keep, run_id_of
from tests.reliability.harness import MotoRecorder
from worker import build_worker
from workflows import search_attributes as sa
from workflows.models import RunbookStatus

pytestmark = pytest.mark.timeout(240)
SERVICES = ("api", "context-engine", "orchestration-engine")
SCRIPT = Path(__file__).parents[2] / "scripts" / "rollback.sh"


async def script(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(SCRIPT),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_rollback_script_updates_each_service_once_and_health_reports_the_target(
    worker: dict[str, str],
    sandbox: httpx.Client,
    dev_env: WorkflowEnvironment,
    aws_endpoint: str,
) -> None:
    """runbook.md's `./scripts/rollback.sh production <previous_image_tag>`: the script
    starts the runbook and follows it; bob approves with the CLI meanwhile."""
    sandbox.post("/control/incidents/rollback", timeout=60).raise_for_status()
    assert sandbox.get("/health").json()["version"] == "v1.5.0"
    recorder = MotoRecorder(aws_endpoint)
    recorder.restart()
    before = await run_id_of(dev_env.client, "rollback/production")
    try:
        following = await script(
            as_approver(worker, "alice"),  # her `runbook start` signs with her key
            *("production", "v1.4.2", "--requested-by", "alice"),
            *("--set", "reason=failed-smoke-tests"),
            *("--set", "poll_seconds=0.5", "--set", "verify_interval_seconds=1"),
        )
        handle = await new_run(dev_env.client, "rollback/production", before)
        status = await gate_open(dev_env.client, handle.id)
        gate = status.pending_gate
        assert gate, (status.phase, [(s.name, s.detail) for s in status.timeline])
        assert "api: prod-api:" in gate.summary and "(v1.5.0) -> prod-api:" in gate.summary
        approved = await cli(as_approver(worker, "bob"), "approve", handle.id, "--as", "bob")
        assert approved.returncode == 0, approved.stderr
        out, err = await asyncio.wait_for(following.communicate(), timeout=180)
        updates = [c for c in recorder.calls() if c.action == "UpdateService"]
    finally:
        recorder.stop()
    assert following.returncode == 0, out.decode() + err.decode()
    assert "outcome: completed" in out.decode()
    assert Counter(c.params["service"] for c in updates) == dict.fromkeys(SERVICES, 1)
    health = sandbox.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok", "version": "v1.4.2"}
    steps = {s.name: s for s in (await handle.query("status", result_type=RunbookStatus)).timeline}
    assert all(steps[f"rollout {s}"].detail.split()[1] == "COMPLETED," for s in SERVICES)
    assert steps["verify health"].outcome == "ok"
    await replay_and_keep(dev_env.client, handle.id, "rollback_e2e_completed")

    refused = await script(worker, "qa", "v1.4.2")  # bad input: nothing is started
    _, err = await refused.communicate()
    assert refused.returncode == 2 and "--env: environment 'qa' is not known" in err.decode()


STAGING = "staging-revenue-context"
ENVIRONMENTS = """
[production]
aws_region = "us-east-1"
task_queue = "{queue}-production"

[staging]
aws_account_id = "123456789012"
aws_region = "us-west-2"
task_queue = "{queue}-staging"

[staging.inputs]
cluster = "{cluster}"
"""


def staging_cluster(aws_endpoint: str) -> None:
    """Staging's services in moto, in staging's own region: revisions v1.4.0 to v1.4.2."""
    ecs = boto3.client("ecs", endpoint_url=aws_endpoint, region_name="us-west-2")
    ecs.create_cluster(clusterName=STAGING)
    for service in SERVICES:
        for image in ("v1.4.0", "v1.4.1", "v1.4.2"):
            ecs.register_task_definition(
                family=f"staging-{service}",
                containerDefinitions=[
                    {"name": service, "image": f"revenue-context/{service}:{image}", "memory": 512}
                ],
            )
        with contextlib.suppress(ecs.exceptions.InvalidParameterException):  # a rerun
            ecs.create_service(
                cluster=STAGING,
                serviceName=service,
                taskDefinition=f"staging-{service}:3",
                desiredCount=1,
            )


async def test_rollback_script_in_staging_plans_on_the_staging_cluster_and_queue(
    dev_env: WorkflowEnvironment,
    stack_env: dict[str, str],
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """runbook.md's `./scripts/rollback.sh <environment> <tag>` for staging: the staging
    worker (its own task queue and region) plans on the staging cluster; a dry run here."""
    staging_cluster(aws_env["AWS_ENDPOINT_URL"])
    queue = f"e2e-envs-{time.monotonic_ns()}"
    environments = tmp_path / "environments.toml"
    environments.write_text(ENVIRONMENTS.format(queue=queue, cluster=STAGING))
    env = {**stack_env, "RUNBOOK_ENVIRONMENTS": str(environments), "RUNBOOK_ENV": "staging"}
    settings = Settings.model_validate(env)
    async with httpx.AsyncClient() as http, build_worker(dev_env.client, settings, http):
        target = dev_env.client.service_client.config.target_host
        cli_env = {**os.environ, **env, "TEMPORAL_ADDRESS": target}
        cli_env.pop("RUNBOOK_ENV")  # the CLI's default would be production: the script says staging
        following = await script(
            cli_env, "staging", "v1.4.1", "--dry-run", "--requested-by", "alice"
        )
        out, err = await asyncio.wait_for(following.communicate(), timeout=120)
        assert following.returncode == 0, out.decode() + err.decode()
        handle = dev_env.client.get_workflow_handle("rollback/staging")
        desc = await handle.describe()
        status = await handle.query("status", result_type=RunbookStatus)
    assert desc.task_queue == f"{queue}-staging"
    assert desc.typed_search_attributes.get(sa.ENVIRONMENT) == "staging"
    assert status.outcome == "dry_run"
    plan = next(s for s in status.timeline if s.name == "plan").detail
    assert "staging-api:3 (v1.4.2) -> staging-api:2 (v1.4.1)" in plan, plan
