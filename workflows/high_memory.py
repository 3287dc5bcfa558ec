"""runbook.md, procedure 6: High Memory Usage.

Diagnose MemoryUtilized (ECS/ContainerInsights, last hour) and the tasks ECS stopped for
running out of memory; plan the new task memory (default double, checked against the valid
Fargate CPU/memory pairs); after approval register a revision copied from the current one
with only the memory changed, the task's and, in proportion, each container's own limits
(an identical one is reused), point the service at it, follow the rollout, and verify the
new revision runs with memory under the threshold.
"""

from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.cloudwatch import CloudWatchActivities, MetricRequest, MetricSummary
    from activities.ecs import (
        EcsActivities,
        EcsService,
        ServicesRequest,
        ServicesResult,
        TasksRequest,
        TasksResult,
    )
    from activities.ecs_rollout import (
        RegisterMemoryRequest,
        RegisterResult,
        TaskDefinitionInfo,
        TaskDefinitionRequest,
        UseTaskDefinitionRequest,
        WaitRolloutRequest,
    )
    from activities.fargate import memory_refusal

from workflows.base import MUTATE_RETRY, MUTATION_HEARTBEAT, READ_RETRY, failure_message
from workflows.gate import GatedRunbook
from workflows.lock import StalePlan, ecs_service, exclusive, lease_for, stale
from workflows.models import MAX_RESOURCE, Finding, RunbookInput, RunbookResult

NAMESPACE, METRIC = "ECS/ContainerInsights", "MemoryUtilized"
# Runs recorded before raised the task memory alone; since, the containers' own limits too.
CONTAINERS_PATCH = "high-memory-raises-container-limits"


class HighMemoryInput(RunbookInput):
    cluster: str = Field("prod-revenue-context", min_length=1, max_length=MAX_RESOURCE)
    service: str = Field("api", min_length=1, max_length=MAX_RESOURCE)
    # New task memory in MiB; None: double the current one (runbook: 2048 -> 4096).
    memory: int | None = Field(None, ge=512, le=122880)
    # After the change, MemoryUtilized must fall under this share of the task memory.
    threshold_percent: float = Field(80.0, gt=0, le=100)
    rollout_timeout_seconds: int = Field(900, ge=30, le=3 * 3600)
    verify_checks: int = Field(5, ge=1, le=60)
    verify_interval_seconds: int = Field(60, ge=1, le=3600)


class MemoryPlan(BaseModel):
    action: str  # "raise" | "refuse"
    summary: str
    steps: list[str]
    task_definition: str | None = None
    current: int | None = None
    target: int | None = None


class Diagnosis(BaseModel):
    findings: list[Finding]
    service: EcsService | None = None
    task_definition: TaskDefinitionInfo | None = None
    memory: MetricSummary | None = None
    oom_kills: int = 0


# ---- judging (pure) ------------------------------------------------------------------------


def judge_memory(metric: MetricSummary) -> Finding:
    if not metric.datapoints:
        return Finding(check=METRIC, verdict="unavailable", summary="no datapoints")
    avg = sum(p.values.get("Average", 0) for p in metric.datapoints) / len(metric.datapoints)
    peak = metric.peak.get("Maximum", 0.0)
    return Finding(
        check=METRIC,
        verdict="ok",
        summary=f"average {avg:,.0f} MiB, maximum {peak:,.0f} MiB over the last hour",
        data={"average": avg, "maximum": peak},
    )


def is_oom(task: Any) -> bool:
    reasons = [task.stopped_reason or ""] + [c.reason or "" for c in task.containers]
    return any("OutOfMemory" in r for r in reasons)


def judge_tasks(tasks: TasksResult) -> Finding:
    stopped = [t for t in tasks.tasks if t.last_status == "STOPPED"]
    oom = [t for t in stopped if is_oom(t)]
    running = tasks.count("RUNNING")
    summary = f"{running} running, {len(stopped)} stopped recently, {len(oom)} OOM-killed"
    if oom:
        summary += f" ({oom[0].stopped_reason})"
    return Finding(
        check="stopped tasks",
        verdict="failing" if oom else "ok",
        summary=summary,
        data={"oom_kills": len(oom), "stopped": len(stopped)},
    )


def judge_service(result: ServicesResult) -> Finding:
    if not result.services:
        return Finding(check="ecs service", verdict="failing", summary="not found")
    svc = result.services[0]
    task_def = (svc.task_definition or "?").rsplit("/", 1)[-1]
    return Finding(
        check="ecs service",
        verdict="ok" if svc.running_count >= svc.desired_count else "degraded",
        summary=f"{svc.name} on {task_def}, {svc.running_count}/{svc.desired_count} running",
    )


def short_ref(arn: str | None) -> str:
    return (arn or "nothing").rsplit("/", 1)[-1]


def judge_task_definition(td: TaskDefinitionInfo) -> Finding:
    summary = f"{td.ref}: cpu {td.cpu}, memory {td.memory} MiB"
    return Finding(check="task definition", verdict="ok", summary=summary)


def make_plan(inp: HighMemoryInput, diag: Diagnosis) -> MemoryPlan:
    """Pure: what would be done, and why."""
    td = diag.task_definition
    if diag.service is None or td is None or td.memory is None or td.cpu is None:
        return MemoryPlan(
            action="refuse",
            summary=f"{inp.service}'s task definition could not be read: nothing is done blind",
            steps=[f"Check the ECS service {inp.service} in {inp.cluster}"],
        )
    target = inp.memory or td.memory * 2
    fargate = "FARGATE" in td.requires_compatibilities or diag.service.launch_type == "FARGATE"
    refusal = memory_refusal(td.cpu, target) if fargate else None
    if target <= td.memory:
        refusal = f"memory: {target} MiB is not above the current {td.memory} MiB"
    if refusal:
        return MemoryPlan(action="refuse", summary=refusal, steps=["Choose a valid memory size"])
    peak = diag.memory.peak.get("Maximum") if diag.memory else None
    seen = f"MemoryUtilized max {peak:,.0f} of {td.memory} MiB" if peak else "memory unknown"
    summary = (
        f"{inp.service}: {seen}, {diag.oom_kills} tasks OOM-killed; raise task memory "
        f"{td.memory} -> {target} MiB (cpu {td.cpu})"
    )
    steps = [
        f"Register a revision of {td.family} copied from {td.ref} with memory {target} MiB and "
        f"each container's own memory limits x{target / td.memory:g} (only memory changes; an "
        "identical revision is reused)",
        f"Update service {inp.service} to it and follow the rollout until COMPLETED",
        f"Verify the new revision runs and MemoryUtilized is under {inp.threshold_percent:g}% "
        f"of {target} MiB",
    ]
    return MemoryPlan(
        action="raise",
        summary=summary,
        steps=steps,
        task_definition=td.arn,
        current=td.memory,
        target=target,
    )


# ---- the workflow --------------------------------------------------------------------------


@workflow.defn(name="HighMemory")
class HighMemory(GatedRunbook):
    procedure = "high-memory"

    @workflow.run
    async def run(self, inp: HighMemoryInput) -> RunbookResult:
        self.begin(inp, inp.service)
        self.tag(inp.severity)
        diag = await self._diagnose(inp)
        plan = make_plan(inp, diag)
        self.set_phase("plan")
        self.record("plan", "info", plan.summary)
        if plan.action == "refuse":
            await self.notify("failed", f"high-memory refused for {inp.service}", plan.summary, {})
            return self.finish("refused", plan.summary, diag.findings, plan.steps)
        if inp.dry_run:
            return self.finish("dry_run", f"Dry run: {plan.summary}", diag.findings, plan.steps)
        decision = await self.gate("raise-memory", plan.summary, plan.steps)
        if not decision.approved:
            return await self.not_approved(diag.findings, plan.steps)
        lease = lease_for(
            90, inp.rollout_timeout_seconds, inp.verify_checks * inp.verify_interval_seconds
        )
        try:
            async with exclusive(
                self, [ecs_service(inp.cluster, inp.service)], lease, lambda: self._stale(inp, plan)
            ):
                summary = await self._remediate(inp, plan)
        except StalePlan as err:
            return await stale(self, err, diag.findings, plan.steps)
        except (ActivityError, ApplicationError) as err:  # a failed step or verification
            await self.fail(plan.summary, failure_message(err))
        await self.notify("resolved", f"high-memory done for {inp.service}", summary, {})
        return self.finish("completed", summary, diag.findings, plan.steps)

    def _read(self, method: Any, arg: Any) -> Awaitable[Any]:
        return workflow.execute_activity_method(
            method, arg, start_to_close_timeout=timedelta(seconds=30), retry_policy=READ_RETRY
        )

    def _memory(self, inp: HighMemoryInput, minutes: int) -> Any:
        return self._read(
            CloudWatchActivities.metric_statistics,
            MetricRequest(
                namespace=NAMESPACE,
                metric_name=METRIC,
                dimensions={"ClusterName": inp.cluster, "ServiceName": inp.service},
                minutes=minutes,
                statistics=["Average", "Maximum"],
            ),
        )

    async def _diagnose(self, inp: HighMemoryInput) -> Diagnosis:
        results = await self.check_all(
            self.check(
                "ecs service",
                self._read(
                    EcsActivities.describe_services,
                    ServicesRequest(cluster=inp.cluster, services=[inp.service]),
                ),
                judge_service,
            ),
            self.check(METRIC, self._memory(inp, 60), judge_memory),
            self.check(
                "stopped tasks",
                self._read(
                    EcsActivities.list_tasks, TasksRequest(cluster=inp.cluster, service=inp.service)
                ),
                judge_tasks,
            ),
        )
        findings = [finding for finding, _ in results]
        services: ServicesResult | None = results[0][1]
        service = services.services[0] if services and services.services else None
        task_def: TaskDefinitionInfo | None = None
        if service and service.task_definition:
            finding, task_def = await self.check(
                "task definition",
                self._read(
                    EcsActivities.describe_task_definition,
                    TaskDefinitionRequest(task_definition=service.task_definition),
                ),
                judge_task_definition,
            )
            findings.append(finding)
        return Diagnosis(
            findings=findings,
            service=service,
            task_definition=task_def,
            memory=results[1][1],
            oom_kills=int(results[2][0].data.get("oom_kills", 0)),
        )

    async def _stale(self, inp: HighMemoryInput, plan: MemoryPlan) -> str | None:
        """Once the lock is held: does the service still run the revision the plan raises?"""
        found: ServicesResult = await self.step(
            "re-read service",
            self._read(
                EcsActivities.describe_services,
                ServicesRequest(cluster=inp.cluster, services=[inp.service]),
            ),
            lambda r: (r.services[0].task_definition or "?") if r.services else "not found",
        )
        now = found.services[0].task_definition if found.services else None
        if now == plan.task_definition:
            return None
        return (
            f"{inp.service} now runs {short_ref(now)}, not {short_ref(plan.task_definition)} "
            "that the approved plan raised: another change came first"
        )

    async def _remediate(self, inp: HighMemoryInput, plan: MemoryPlan) -> str:
        assert plan.task_definition and plan.target
        self.set_phase("act")
        registered: RegisterResult = await self.step(
            "register revision",
            workflow.execute_activity_method(
                EcsActivities.register_memory_revision,
                RegisterMemoryRequest(
                    task_definition=plan.task_definition,
                    memory=plan.target,
                    containers=workflow.patched(CONTAINERS_PATCH),
                    authority=self.authority(),
                ),
                start_to_close_timeout=timedelta(seconds=60),
                heartbeat_timeout=MUTATION_HEARTBEAT,
                retry_policy=MUTATE_RETRY,
            ),
            lambda r: r.reason,
        )
        new = registered.task_definition
        await self.step(
            f"update service {inp.service}",
            workflow.execute_activity_method(
                EcsActivities.use_task_definition,
                UseTaskDefinitionRequest(
                    cluster=inp.cluster,
                    service=inp.service,
                    task_definition=new.arn,
                    authority=self.authority(),
                ),
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=MUTATION_HEARTBEAT,
                retry_policy=MUTATE_RETRY,
            ),
            lambda r: r.reason,
        )
        self.set_phase("verify")
        await self.step(
            f"rollout {inp.service}",
            workflow.execute_activity_method(
                EcsActivities.wait_rollout,
                WaitRolloutRequest(
                    cluster=inp.cluster, service=inp.service, task_definition=new.arn
                ),
                start_to_close_timeout=timedelta(seconds=inp.rollout_timeout_seconds),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=MUTATE_RETRY,
            ),
            lambda r: f"{new.ref} {r.rollout_state}, {r.running_count}/{r.desired_count} running",
        )
        share = await self._verify_memory(inp, plan.target)
        return (
            f"{inp.service} runs {new.ref} with {plan.target} MiB (was {plan.current}); "
            f"MemoryUtilized {share:.0f}% of it"
        )

    async def _verify_memory(self, inp: HighMemoryInput, target: int) -> float:
        """Poll MemoryUtilized on durable timers until it is under the threshold."""
        share = 100.0
        for check in range(1, inp.verify_checks + 1):
            metric: MetricSummary = await self._memory(inp, 5)
            latest = metric.latest.get("Average")
            share = 100.0 * latest / target if latest is not None else 100.0
            if latest is not None and share < inp.threshold_percent:
                self.record("memory under threshold", "ok", f"{latest:,.0f} MiB, {share:.0f}%")
                return share
            if check < inp.verify_checks:
                await workflow.sleep(inp.verify_interval_seconds)
        raise ApplicationError(
            f"MemoryUtilized still {share:.0f}% of {target} MiB after "
            f"{inp.verify_checks} checks (threshold {inp.threshold_percent:g}%)",
            type="MemoryStillHigh",
            non_retryable=True,
        )
