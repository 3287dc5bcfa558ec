"""Fake activities for the LlmBudgetExhaustion workflow-logic tests: the spend in Valkey, the
service's /metrics, Secrets Manager, the forced redeploy of `api`. Same names and models as
the real ones, which have their own tests (tests/activities/test_secrets_llm.py) and run end
to end (tests/e2e/test_llm_budget.py)."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.cloudwatch import MetricRequest, MetricSummary
from activities.ecs import ServicesRequest, ServicesResult
from activities.ecs_rollout import (
    DeploymentStarted,
    ForceDeploymentRequest,
    RolloutResult,
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
from activities.secrets import (
    SecretNumber,
    SecretNumberChange,
    SecretNumberRequest,
    SetSecretNumberRequest,
)
from tests.fakes.ecs import rollout_completed, service
from tests.fakes.systems import FakeSystems


@dataclass
class FakeLlm:
    gate: FakeSystems
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
            return rollout_completed(req, req.deployment_id or "", "prod-api:3")

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
            *self.gate.gate_activities(),
        ]
