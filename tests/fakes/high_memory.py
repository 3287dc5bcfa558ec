"""Fake activities for the HighMemory workflow-logic tests: ECS task definitions and
ContainerInsights' MemoryUtilized. Same names and models as the real ones, which have their
own tests against the sandbox's moto (tests/activities/test_ecs_memory.py)."""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from temporalio import activity

from activities.cloudwatch import Datapoint, MetricRequest, MetricSummary
from activities.ecs import EcsTask, ServicesRequest, ServicesResult, TasksRequest, TasksResult
from activities.ecs_rollout import (
    RegisterMemoryRequest,
    RegisterResult,
    RolloutResult,
    TaskDefinitionInfo,
    TaskDefinitionRequest,
    UseTaskDefinitionRequest,
    UseTaskDefinitionResult,
    WaitRolloutRequest,
)
from tests.fakes.ecs import rollout_completed, service
from tests.fakes.systems import FakeSystems


@dataclass
class FakeMemory:
    """ECS and ContainerInsights for high-memory: api on prod-api:3, cpu 1024, 2048 MiB."""

    gate: FakeSystems
    cpu: int = 1024
    memory: int = 2048
    # MemoryUtilized readings after the change, in order; the last one repeats.
    after: list[float] = field(default_factory=lambda: [2000.0])
    calls: list[str] = field(default_factory=list)
    registered: list[RegisterMemoryRequest] = field(default_factory=list)

    def activities(self) -> list[Any]:
        td = TaskDefinitionInfo(
            arn="arn:aws:ecs:us-east-1:123456789012:task-definition/prod-api:3",
            family="prod-api",
            revision=3,
            status="ACTIVE",
            cpu=self.cpu,
            memory=self.memory,
            images={"api": "revenue-context/api:v1.4.2"},
            requires_compatibilities=["FARGATE"],
        )

        @activity.defn(name="ecs.describe_services")
        async def describe_services(req: ServicesRequest) -> ServicesResult:
            self.calls.append("describe_services")
            svc = service(req.services[0], task_def=td.arn).model_copy(
                update={"launch_type": "FARGATE"}
            )
            return ServicesResult(cluster=req.cluster, services=[svc])

        @activity.defn(name="ecs.list_tasks")
        async def list_tasks(req: TasksRequest) -> TasksResult:
            oom = "OutOfMemoryError: Container killed due to memory usage"
            tasks = [
                EcsTask(
                    task_arn=f"arn:task/{n}",
                    task_id=str(n),
                    last_status="STOPPED",
                    desired_status="STOPPED",
                    stopped_reason=oom,
                )
                for n in range(3)
            ]
            return TasksResult(cluster=req.cluster, service=req.service, tasks=tasks)

        @activity.defn(name="ecs.describe_task_definition")
        async def describe_td(req: TaskDefinitionRequest) -> TaskDefinitionInfo:
            return td

        @activity.defn(name="cloudwatch.metric_statistics")
        async def metric(req: MetricRequest) -> MetricSummary:
            self.calls.append(f"metric {req.minutes}")
            if req.minutes == 60:  # the diagnosis: close to the limit
                value = 1990.0
            else:
                value = self.after.pop(0) if len(self.after) > 1 else self.after[0]
            point = Datapoint(
                timestamp=datetime(2026, 11, 26, tzinfo=UTC),
                values={"Average": value, "Maximum": value},
            )
            return MetricSummary(
                metric_name=req.metric_name,
                datapoints=[point],
                latest=point.values,
                peak=point.values,
            )

        @activity.defn(name="ecs.register_memory_revision")
        async def register(req: RegisterMemoryRequest) -> RegisterResult:
            self.calls.append("register")
            self.registered.append(req)
            new = td.model_copy(
                update={"revision": 4, "memory": req.memory, "arn": td.arn[:-1] + "4"}
            )
            return RegisterResult(task_definition=new, registered=True, reason="registered")

        @activity.defn(name="ecs.use_task_definition")
        async def use(req: UseTaskDefinitionRequest) -> UseTaskDefinitionResult:
            self.calls.append("use")
            return UseTaskDefinitionResult(
                service=req.service,
                previous_task_definition=td.arn,
                task_definition=req.task_definition,
                changed=True,
                reason="prod-api:3 -> prod-api:4",
            )

        @activity.defn(name="ecs.wait_rollout")
        async def wait_rollout(req: WaitRolloutRequest) -> RolloutResult:
            self.calls.append("rollout")
            return rollout_completed(req, "ecs-svc/1")

        return [
            describe_services,
            list_tasks,
            describe_td,
            metric,
            register,
            use,
            wait_rollout,
            *self.gate.gate_activities(),
        ]
