"""The activities rollback uses, against the sandbox's moto and its `/health`, with the
sandbox's bad-deploy incident (sandbox/incidents/rollback.py)."""

import boto3
import httpx
from temporalio.testing import ActivityEnvironment

from activities.ecs import EcsActivities, ServicesRequest
from activities.ecs_rollout import (
    RevisionsRequest,
    TaskDefinitionRequest,
    UseTaskDefinitionRequest,
    WaitRolloutRequest,
    image_tag,
)
from activities.health import HealthActivities, HealthRequest, HealthResult
from tests.temporal_env import eventually, run_activity


def family_revisions() -> list[str]:
    pages = (
        boto3.client("ecs").get_paginator("list_task_definitions").paginate(familyPrefix="prod-api")
    )
    return [arn for page in pages for arn in page["taskDefinitionArns"]]


async def test_bad_deploy_rolled_back_changes_what_health_reports(
    sandbox: httpx.Client,
    ecs: EcsActivities,
    sandbox_url: str,
) -> None:
    assert sandbox.get("/health").json() == {"status": "ok", "version": "v1.4.2"}
    sandbox.post("/control/incidents/rollback", timeout=60).raise_for_status()
    known = family_revisions()
    sandbox.post("/control/incidents/rollback", timeout=60).raise_for_status()  # again: reused
    assert family_revisions() == known
    bad = sandbox.get("/health")
    assert bad.status_code == 503 and bad.json()["version"] == "v1.5.0"
    assert "v1.5.0 fails its smoke tests" in bad.json()["error"]

    [api] = run_activity(ecs.describe_services, ServicesRequest(services=["api"])).services
    assert api.task_definition
    current = run_activity(
        ecs.describe_task_definition, TaskDefinitionRequest(task_definition=api.task_definition)
    )
    revisions = run_activity(ecs.list_revisions, RevisionsRequest(family="prod-api", max_items=20))
    assert image_tag(current.images["api"]) == "v1.5.0"
    assert revisions.revisions[0].revision >= current.revision  # newest first
    good = next(
        td
        for td in revisions.revisions
        if td.revision < current.revision and image_tag(td.images["api"]) == "v1.4.2"
    )

    use = UseTaskDefinitionRequest(service="api", task_definition=good.arn)
    first, again = (
        run_activity(ecs.use_task_definition, use),
        run_activity(ecs.use_task_definition, use),
    )
    assert first.changed and not again.changed  # a retry sends no second update
    done = run_activity(
        ecs.wait_rollout,
        WaitRolloutRequest(service="api", task_definition=good.arn, poll_seconds=0.2),
    )
    assert done.rollout_state == "COMPLETED" and done.running_count == done.desired_count

    async with httpx.AsyncClient() as http:
        health = HealthActivities(sandbox_url, http)

        async def reported() -> HealthResult | None:
            result = await ActivityEnvironment().run(health.check, HealthRequest(path="/health"))
            return result if result.body and result.body["version"] == "v1.4.2" else None

        # The service reports a deployment once ECS completed it.
        result = await eventually(reported, "/health to report v1.4.2")
    # api is back on v1.4.2; context-engine and orchestration-engine still run v1.5.0
    assert result.status_code == 503 and result.body and result.body["version"] == "v1.4.2"
    assert "(context-engine, orchestration-engine)" in result.body["error"]
