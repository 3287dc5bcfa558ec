"""The high-memory activities against the sandbox's moto (ECS, CloudWatch ContainerInsights)."""

import uuid

import boto3
import httpx
import pytest
from temporalio.exceptions import ApplicationError

from activities.cloudwatch import CloudWatchActivities, MetricRequest
from activities.ecs import EcsActivities, ServicesRequest, TasksRequest
from activities.ecs_rollout import (
    RegisterMemoryRequest,
    UseTaskDefinitionRequest,
    WaitRolloutRequest,
)
from activities.fargate import memory_refusal, valid_memory
from tests.temporal_env import run_activity, wait_until


def test_fargate_pairs() -> None:
    assert valid_memory(256) == [512, 1024, 2048]
    assert 4096 in valid_memory(1024) and 9216 not in valid_memory(1024)
    assert memory_refusal(1024, 4096) is None
    refusal = memory_refusal(512, 8192)
    assert refusal and "cpu 512: 1024, 2048, 3072, 4096 MiB" in refusal
    assert "valid cpu: 256, 512, 1024" in (memory_refusal(1000, 2048) or "")


def test_memory_revision_registered_once_then_rolled_out(
    sandbox: httpx.Client, ecs: EcsActivities
) -> None:
    ask = RegisterMemoryRequest(task_definition="prod-api:3", memory=4096, containers=True)
    first = run_activity(ecs.register_memory_revision, ask)
    retry = run_activity(ecs.register_memory_revision, ask)  # a retry registers nothing new
    assert first.task_definition.memory == 4096
    assert first.task_definition.images == {"api": "revenue-context/api:v1.4.2"}
    assert first.task_definition.cpu == 1024
    assert not retry.registered and retry.task_definition.arn == first.task_definition.arn
    described = boto3.client("ecs").describe_task_definition(taskDefinition="prod-api:3")
    copy = boto3.client("ecs").describe_task_definition(taskDefinition=first.task_definition.arn)
    # Only the memory changed: the task's and its container's own limit.
    for key in ("networkMode", "requiresCompatibilities", "cpu"):
        assert copy["taskDefinition"][key] == described["taskDefinition"][key]
    [was], [now] = (
        described["taskDefinition"]["containerDefinitions"],
        copy["taskDefinition"]["containerDefinitions"],
    )
    assert (was.pop("memory"), now.pop("memory")) == (2048, 4096) and now == was

    use = UseTaskDefinitionRequest(service="api", task_definition=first.task_definition.arn)
    changed = run_activity(ecs.use_task_definition, use)
    again = run_activity(ecs.use_task_definition, use)
    done = run_activity(
        ecs.wait_rollout,
        WaitRolloutRequest(
            service="api", task_definition=first.task_definition.arn, poll_seconds=0.2
        ),
    )
    assert changed.changed and not again.changed
    assert done.rollout_state == "COMPLETED" and done.running_count == done.desired_count
    [api] = run_activity(ecs.describe_services, ServicesRequest(services=["api"])).services
    assert api.task_definition == first.task_definition.arn
    # The sandbox sees a completed deployment on its next poll (every POLL_SECONDS).
    memory = lambda: sandbox.get("/control/remediation").json()["services"]["api"]["memory"]  # noqa: E731
    assert wait_until(lambda: memory() == 4096, timeout=30)


def test_containers_own_limits_are_raised_in_proportion(
    sandbox: httpx.Client, ecs: EcsActivities
) -> None:
    """ECS kills a container at its own `memory` whatever the task has: a larger task alone
    leaves the OOM kills going on."""
    client = boto3.client("ecs")
    family = f"oom-limits-{uuid.uuid4().hex[:8]}"  # its own family: nothing else reuses it
    container = {"image": "revenue-context/api:v1.4.2", "essential": True}
    client.register_task_definition(
        family=family,
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="1024",
        memory="2048",
        containerDefinitions=[
            {**container, "name": "api", "memory": 1792, "memoryReservation": 1024},
            {**container, "name": "log-router", "memory": 256},
            {**container, "name": "agent", "essential": False},
        ],
    )
    ask = RegisterMemoryRequest(task_definition=f"{family}:1", memory=4096, containers=True)
    first = run_activity(ecs.register_memory_revision, ask)
    retry = run_activity(ecs.register_memory_revision, ask)
    registered = client.describe_task_definition(taskDefinition=first.task_definition.arn)
    limits = {
        c["name"]: (c.get("memory"), c.get("memoryReservation"))
        for c in registered["taskDefinition"]["containerDefinitions"]
    }
    assert registered["taskDefinition"]["memory"] == "4096"
    assert limits == {"api": (3584, 2048), "log-router": (512, None), "agent": (None, None)}
    assert "api 1792 -> 3584 MiB, reservation 1024 -> 2048" in first.reason
    assert not retry.registered and retry.task_definition.arn == first.task_definition.arn


def test_invalid_fargate_memory_is_refused(sandbox: httpx.Client, ecs: EcsActivities) -> None:
    with pytest.raises(ApplicationError) as err:
        run_activity(
            ecs.register_memory_revision,
            RegisterMemoryRequest(task_definition="prod-api:3", memory=3000),
        )
    assert err.value.non_retryable and err.value.type == "InvalidFargateMemory"
    assert "2048 to 8192 MiB" in str(err.value)


def test_incident_shows_oom_kills_and_memory_near_the_limit(
    sandbox: httpx.Client, ecs: EcsActivities
) -> None:
    cw = CloudWatchActivities(boto3.client("cloudwatch"))
    ask = MetricRequest(
        namespace="ECS/ContainerInsights",
        metric_name="MemoryUtilized",
        dimensions={"ClusterName": "prod-revenue-context", "ServiceName": "api"},
        minutes=60,
        statistics=["Average", "Maximum"],
    )
    calm = run_activity(cw.metric_statistics, ask)
    sandbox.post("/control/incidents/high-memory").raise_for_status()
    high = run_activity(cw.metric_statistics, ask)
    tasks = run_activity(ecs.list_tasks, TasksRequest(service="api"))
    oom = [t for t in tasks.tasks if t.stopped_reason and "OutOfMemory" in t.stopped_reason]
    assert calm.latest["Average"] < 1500 and high.peak["Maximum"] > 1900
    assert len(oom) == 3 and all(t.containers[0].exit_code == 137 for t in oom)
