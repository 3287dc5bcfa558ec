"""Fake activities for the issue-5 workflow-logic tests (llm-budget, rollback, high-memory,
cert-renewal): same names and models as the real ones, which have their own tests against
moto, Valkey and the sandbox. The gate's own activities (Slack, PagerDuty, approvals) come
from tests/fakes.py."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.cloudwatch import Datapoint, MetricRequest, MetricSummary
from activities.ecs import (
    Deployment,
    EcsService,
    EcsTask,
    ServicesRequest,
    ServicesResult,
    TasksRequest,
    TasksResult,
)
from activities.ecs_rollout import (
    DeploymentStarted,
    ForceDeploymentRequest,
    RegisterMemoryRequest,
    RegisterResult,
    RolloutResult,
    TaskDefinitionInfo,
    TaskDefinitionRequest,
    UseTaskDefinitionRequest,
    UseTaskDefinitionResult,
    WaitRolloutRequest,
)
from activities.llm import (
    BudgetPolicy,
    BudgetPolicyRequest,
    LlmMetrics,
    LlmMetricsRequest,
    Spend,
    SpendRequest,
    WaitBudgetRequest,
)
from activities.notify import Notification
from activities.secrets import (
    SecretNumber,
    SecretNumberChange,
    SecretNumberRequest,
    SetSecretNumberRequest,
)
from tests.fakes.systems import FakeSystems

GATE_ACTIVITIES = {
    "notify.slack",
    "notify.pagerduty",
    "approvals.plan_escalation",
    "approvals.verify",
    "incidents.record",
    "worker.mode",
}


def activity_name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__temporal_activity_definition").name)


@dataclass
class GateSupport:
    """Slack, PagerDuty and the approvals activities, from the shared fakes."""

    roster: tuple[Path, Path]
    systems: FakeSystems = field(init=False)

    def __post_init__(self) -> None:
        self.systems = FakeSystems(self.roster)  # type: ignore[call-arg]

    @property
    def notes(self) -> list[Notification]:
        return self.systems.notes

    def activities(self) -> list[Any]:
        return [a for a in self.systems.activities() if activity_name(a) in GATE_ACTIVITIES]


def service(name: str, deployment: str = "ecs-svc/1", task_def: str = "prod-api:3") -> EcsService:
    return EcsService(
        name=name,
        status="ACTIVE",
        desired_count=2,
        running_count=2,
        pending_count=0,
        task_definition=task_def,
        deployments=[
            Deployment(
                id=deployment,
                status="PRIMARY",
                task_definition=task_def,
                desired_count=2,
                running_count=2,
                rollout_state="COMPLETED",
            )
        ],
    )


@dataclass
class FakeLlm:
    gate: GateSupport
    budget: float = 100.0
    policy: BudgetPolicy = field(default_factory=lambda: BudgetPolicy(minimum=1, maximum=500))
    # Spend readings during the watch, in order; the last one repeats.
    watch_spend: list[float] = field(default_factory=lambda: [100.0])
    secret_error: str | None = None
    rollout_error: str | None = None
    calls: list[str] = field(default_factory=list)
    writes: list[SetSecretNumberRequest] = field(default_factory=list)
    # Holds the watch's first spend reading until the test releases it.
    hold_watch: asyncio.Event | None = None

    def activities(self) -> list[Any]:
        diagnosed = False

        @activity.defn(name="llm.spend")
        async def spend(req: SpendRequest) -> Spend:
            nonlocal diagnosed
            self.calls.append("spend")
            if not diagnosed:
                diagnosed = True
                value = self.budget
            else:
                if self.hold_watch is not None:
                    await self.hold_watch.wait()
                value = (
                    self.watch_spend.pop(0) if len(self.watch_spend) > 1 else self.watch_spend[0]
                )
            return Spend(
                key="llm:spend:global:2026-11-26", date="2026-11-26", spend=value, found=True
            )

        @activity.defn(name="llm.metrics")
        async def metrics(req: LlmMetricsRequest) -> LlmMetrics:
            self.calls.append("metrics")
            gauges = {
                "llm_budget_daily_usd": self.budget,
                "llm_budget_spent_usd": self.budget,
                "llm_budget_exhausted": 1.0,
            }
            return LlmMetrics(
                budget=gauges,
                calls_total=5000,
                calls_by_status={"ok": 4000, "budget_exceeded": 1000},
            )

        @activity.defn(name="cloudwatch.metric_statistics")
        async def metric(req: MetricRequest) -> MetricSummary:
            self.calls.append(f"metric {req.metric_name}")
            return MetricSummary(metric_name=req.metric_name, datapoints=[], latest={}, peak={})

        @activity.defn(name="secrets.read_number")
        async def read_number(req: SecretNumberRequest) -> SecretNumber:
            self.calls.append("read_number")
            if self.secret_error:
                raise ApplicationError(self.secret_error, type="SecretNotFound", non_retryable=True)
            return SecretNumber(
                secret_id=req.secret_id,
                key=req.key,
                value=self.budget,
                version_id="v-old",
                key_count=6,
            )

        @activity.defn(name="secrets.set_number")
        async def set_number(req: SetSecretNumberRequest) -> SecretNumberChange:
            self.calls.append("set_number")
            self.writes.append(req)
            return SecretNumberChange(
                secret_id=req.secret_id,
                key=req.key,
                old_value=self.budget,
                new_value=req.value,
                previous_version_id="v-old",
                version_id=req.client_request_token,
                changed=True,
                key_count=6,
                detail=f"{req.key} {self.budget:g} -> {req.value:g}; 5 other keys kept",
            )

        @activity.defn(name="llm.budget_policy")
        async def budget_policy(req: BudgetPolicyRequest) -> BudgetPolicy:
            return self.policy

        @activity.defn(name="ecs.describe_services")
        async def describe_services(req: ServicesRequest) -> ServicesResult:
            self.calls.append("describe_services")
            return ServicesResult(cluster=req.cluster, services=[service(n) for n in req.services])

        @activity.defn(name="ecs.force_new_deployment")
        async def force(req: ForceDeploymentRequest) -> DeploymentStarted:
            self.calls.append(f"force {req.service}")
            return DeploymentStarted(
                service=req.service,
                deployment_id="ecs-svc/2",
                task_definition="prod-api:3",
                started=True,
                reason="new deployment ecs-svc/2 forced",
            )

        @activity.defn(name="ecs.wait_rollout")
        async def wait_rollout(req: WaitRolloutRequest) -> RolloutResult:
            self.calls.append(f"rollout {req.service}")
            if self.rollout_error:
                raise ApplicationError(self.rollout_error, type="RolloutFailed", non_retryable=True)
            return RolloutResult(
                service=req.service,
                deployment_id=req.deployment_id or "",
                task_definition="prod-api:3",
                rollout_state="COMPLETED",
                running_count=2,
                desired_count=2,
                waited_seconds=40,
                polls=20,
            )

        @activity.defn(name="llm.wait_budget_in_force")
        async def in_force(req: WaitBudgetRequest) -> LlmMetrics:
            self.calls.append("wait_budget_in_force")
            return LlmMetrics(
                budget={"llm_budget_daily_usd": req.expected}, calls_total=0, calls_by_status={}
            )

        return [
            spend,
            metrics,
            metric,
            read_number,
            set_number,
            budget_policy,
            describe_services,
            force,
            wait_rollout,
            in_force,
            *self.gate.activities(),
        ]


@dataclass
class FakeMemory:
    """ECS and ContainerInsights for high-memory: api on prod-api:3, cpu 1024, 2048 MiB."""

    gate: GateSupport
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
            return RolloutResult(
                service=req.service,
                deployment_id="ecs-svc/1",
                task_definition=req.task_definition,
                rollout_state="COMPLETED",
                running_count=2,
                desired_count=2,
                waited_seconds=30,
                polls=10,
            )

        return [
            describe_services,
            list_tasks,
            describe_td,
            metric,
            register,
            use,
            wait_rollout,
            *self.gate.activities(),
        ]
