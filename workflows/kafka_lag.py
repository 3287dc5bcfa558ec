"""runbook.md, procedure 2: Kafka Consumer Lag."""

import math
from datetime import timedelta
from functools import partial
from typing import Literal

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.ecs import (
        EcsActivities,
        EcsService,
        ScaleRequest,
        ServicesRequest,
    )
    from activities.health import HealthActivities, HealthRequest
    from activities.kafka import DlqPeekRequest, KafkaActivities, LagRequest, LagResult
    from activities.logs import LogErrorsRequest, LogsActivities
    from activities.postgres_queries import QueryActivities, SlowQueriesRequest, SlowQueriesResult

from workflows.base import failure_message
from workflows.diagnosis import (
    describe_slow,
    first_service,
    judge_dlq,
    judge_health,
    judge_lag,
    judge_logs,
    judge_one_service,
    read,
    scale_and_wait,
    scale_stale,
)
from workflows.escalation import escalate
from workflows.gate import GatedRunbook
from workflows.lock import StalePlan, ecs_service, exclusive, lease_for, stale
from workflows.models import MAX_RESOURCE, Finding, Outcome, ParamSpec, RunbookInput, RunbookResult


class KafkaLagInput(RunbookInput):
    cluster: str = Field("prod-revenue-context", min_length=1, max_length=MAX_RESOURCE)
    service: str = Field("context-engine", min_length=1, max_length=MAX_RESOURCE)
    consumer_group: str = Field("context_engine_group", min_length=1, max_length=MAX_RESOURCE)
    topic: str = Field("signals.raw", min_length=1, max_length=MAX_RESOURCE)
    dlq_topic: str = Field("signals.raw.dlq", min_length=1, max_length=MAX_RESOURCE)
    log_group: str = Field("/ecs/production/context-engine", min_length=1, max_length=MAX_RESOURCE)
    log_minutes: int = Field(10, ge=1, le=24 * 60)
    # runbook.md 2.1: "--desired-count 5" when nothing better is known.
    default_workers: int = Field(5, ge=1, le=100)
    # The most context-engine tasks this runbook may ask for.
    max_workers: int = Field(10, ge=1, le=100)
    # Lag above this is an incident; the plan aims to clear it within drain_target_seconds.
    lag_threshold: int = Field(1000, ge=0)
    drain_target_seconds: int = Field(300, ge=10, le=24 * 3600)
    # The lag is measured twice this far apart: it gives the produce and consume rates.
    sample_seconds: float = Field(5.0, ge=0, le=120)
    # After the scale-up, the lag is measured again over this window.
    settle_seconds: float = Field(60.0, ge=0, le=3600)
    check_timeout_seconds: float = Field(30.0, ge=1, le=600)
    scale_timeout_seconds: int = Field(600, ge=10, le=3600)
    poll_seconds: float = Field(5.0, gt=0, le=60)


# Runs from here on end `not_mitigated` / `escalated` where they ended `completed`, and email
# the escalation (workflows/escalation.py) instead of only writing it.
ESCALATION_OUTCOMES = "kafka-lag-escalation-outcomes"
INFRASTRUCTURE = "Escalate to Infrastructure (devops@company.com)"
DATABASE_TEAM = "Escalate to the Database Team (dba@company.com)"


class LagPlan(BaseModel):
    # escalate: behind and growing, but no more workers would help: only people can.
    action: Literal["scale", "none", "refuse", "escalate"]
    summary: str
    steps: list[str]
    current: int = 0
    target: int = 0
    basis: str = ""


def target_workers(inp: KafkaLagInput, lag: LagResult | None, svc: EcsService) -> tuple[int, str]:
    """How many workers would clear the lag within the drain target, and why."""
    running = svc.running_count
    consumed = lag.consume_rate if lag else None
    if lag is None or not consumed or running <= 0 or lag.produce_rate is None:
        return (
            inp.default_workers,
            f"runbook default {inp.default_workers} (no drain rate observed)",
        )
    per_worker = consumed / running
    needed_rate = lag.produce_rate + lag.total_lag / inp.drain_target_seconds
    needed = max(math.ceil(needed_rate / per_worker), 1)
    basis = (
        f"{lag.produce_rate:.0f}/s arriving + {lag.total_lag} behind over "
        f"{inp.drain_target_seconds}s = {needed_rate:.0f}/s at {per_worker:.1f}/s a worker"
    )
    return needed, basis


def make_plan(inp: KafkaLagInput, lag: LagResult | None, svc: EcsService | None) -> LagPlan:
    """Pure: what would be done, and why."""
    if svc is None:
        return LagPlan(
            action="refuse",
            summary=f"ECS service {inp.service} could not be described: nothing is scaled blind",
            steps=[INFRASTRUCTURE],
        )
    current = svc.desired_count
    behind = lag is None or lag.total_lag > inp.lag_threshold or (lag.lag_rate or 0) > 0
    if lag is not None and not behind:
        return LagPlan(
            action="none",
            summary=f"{lag.total_lag} behind (threshold {inp.lag_threshold}) and not growing: "
            "no scaling needed",
            steps=[],
            current=current,
        )
    wanted, basis = target_workers(inp, lag, svc)
    partitions = len({(p.topic, p.partition) for p in lag.partitions}) if lag else 0
    target = min(wanted, inp.max_workers)
    if target < wanted:
        basis += f"; capped at max_workers {inp.max_workers}"
    if partitions and target > partitions:
        target = partitions
        basis += f"; capped at {partitions} partitions (more consumers would sit idle)"
    verify = [
        f"Wait until {target} {inp.service} tasks run",
        f"Measure the lag again over {inp.settle_seconds:.0f}s: it must be falling",
        "If it is not: top 10 slow queries (pg_stat_statements) into the report",
    ]
    if target <= current:
        if lag is not None and (lag.lag_rate or 0) < 0:
            return LagPlan(
                action="none",
                summary=f"{lag.total_lag} behind but falling with {current} workers: "
                "no scaling needed",
                steps=[],
                current=current,
                target=target,
                basis=basis,
            )
        return LagPlan(
            action="escalate",
            summary=f"already {current} desired, the most this plan allows ({basis}); "
            "look at slow queries and the DLQ",
            steps=["Top 10 slow queries (pg_stat_statements) into the report", DATABASE_TEAM],
            current=current,
            target=target,
            basis=basis,
        )
    lag_text = f"{lag.total_lag} behind" if lag else "lag unknown"
    return LagPlan(
        action="scale",
        summary=f"Scale {inp.service} from {current} to {target} tasks ({lag_text}; {basis})",
        steps=[f"Set {inp.service} desired count {current} -> {target}", *verify],
        current=current,
        target=target,
        basis=basis,
    )


@workflow.defn(name="KafkaConsumerLag")
class KafkaConsumerLag(GatedRunbook):
    procedure = "kafka-lag"

    @workflow.run
    async def run(self, inp: KafkaLagInput) -> RunbookResult:
        self.begin(inp, inp.consumer_group)
        self.tag(inp.severity)
        findings, lag, svc = await self._diagnose(inp)
        plan = make_plan(inp, lag, svc)
        self.set_phase("plan")
        self.record("plan", "info", plan.summary)
        if plan.action in ("refuse", "escalate") and workflow.patched(ESCALATION_OUTCOMES):
            return await self._only_escalate(inp, plan, findings)
        if plan.action != "scale":
            outcome: Outcome = "refused" if plan.action == "refuse" else "completed"
            if plan.action == "refuse":
                await self.notify(
                    "failed", f"kafka-lag refused for {inp.service}", plan.summary, {}
                )
            return self.finish(outcome, plan.summary, findings, plan.steps)
        if inp.dry_run:
            return self.finish("dry_run", f"Dry run: {plan.summary}", findings, plan.steps)
        decision = await self.gate(
            "scale",
            plan.summary,
            plan.steps,
            params=[
                ParamSpec(
                    name="desired_count",
                    minimum=max(plan.current, 1),
                    maximum=inp.max_workers,
                    default=plan.target,
                    integer=True,
                    help=f"{inp.service} tasks to run",
                )
            ],
        )
        if not decision.approved:
            return await self.not_approved(findings, plan.steps)
        target = int(decision.number("desired_count"))
        lease = lease_for(
            60 + inp.scale_timeout_seconds + inp.settle_seconds + inp.sample_seconds,
            3 * inp.check_timeout_seconds,
        )
        recheck = partial(
            scale_stale, self, inp.cluster, inp.service, plan.current, inp.check_timeout_seconds
        )
        try:
            async with exclusive(self, [ecs_service(inp.cluster, inp.service)], lease, recheck):
                summary, kind = await self._remediate(inp, target)
        except StalePlan as err:
            return await stale(self, err, findings, plan.steps)
        except ActivityError as err:
            reason = failure_message(err)
            if workflow.patched(ESCALATION_OUTCOMES):  # the fail's Slack line says the rest
                title = f"kafka-lag FAILED for {inp.service}"
                await escalate(self, "devops", title, f"{plan.summary}: {reason}", slack=False)
            await self.fail(plan.summary, reason, INFRASTRUCTURE + ".")
        if kind == "escalation" and workflow.patched(ESCALATION_OUTCOMES):
            title = f"kafka-lag: {inp.service} lag not falling at {target} tasks"
            await escalate(self, "dba", title, summary)
            return self.finish("not_mitigated", summary, findings, plan.steps)
        await self.notify(kind, f"kafka-lag: {inp.service} scaled to {target}", summary, {})
        return self.finish("completed", summary, findings, plan.steps)

    async def _only_escalate(
        self, inp: KafkaLagInput, plan: LagPlan, findings: list[Finding]
    ) -> RunbookResult:
        """Nothing this procedure may do would help: the people who can are told (email and
        Slack), and the run says it did not mitigate."""
        if plan.action == "refuse":
            await escalate(self, "devops", f"kafka-lag: {inp.service} not scaled", plan.summary)
            return self.finish("escalated", plan.summary, findings, plan.steps)
        summary = f"{plan.summary}. Slow queries: {await self._slow_queries(inp)}"
        await escalate(self, "dba", f"kafka-lag: {inp.service} behind at its cap", summary)
        return self.finish("escalated", summary, findings, plan.steps)

    async def _diagnose(
        self, inp: KafkaLagInput
    ) -> tuple[list[Finding], LagResult | None, EcsService | None]:
        timeout = inp.check_timeout_seconds
        lag_req = LagRequest(
            group=inp.consumer_group,
            topics=[inp.topic],
            sample_seconds=inp.sample_seconds,
            timeout_seconds=min(timeout / 3, 10),
        )
        results = await self.check_all(
            self.check(
                "consumer lag",
                read(KafkaActivities.consumer_lag, lag_req, timeout + inp.sample_seconds, True),
                judge_lag(inp.lag_threshold),
            ),
            self.check(
                f"ecs {inp.service}",
                read(
                    EcsActivities.describe_services,
                    ServicesRequest(cluster=inp.cluster, services=[inp.service]),
                    timeout,
                ),
                judge_one_service,
            ),
            self.check(
                "/health/workers",
                read(HealthActivities.check, HealthRequest(path="/health/workers"), timeout),
                judge_health,
            ),
            self.check(
                f"logs {inp.log_group}",
                read(
                    LogsActivities.recent_errors,
                    LogErrorsRequest(log_group=inp.log_group, minutes=inp.log_minutes),
                    timeout,
                ),
                judge_logs,
            ),
            self.check(
                "dlq",
                read(
                    KafkaActivities.peek_dlq,
                    DlqPeekRequest(topic=inp.dlq_topic, timeout_seconds=min(timeout / 3, 10)),
                    timeout,
                ),
                judge_dlq,
            ),
        )
        return [f for f, _ in results], results[0][1], first_service(results[1][1])

    async def _remediate(self, inp: KafkaLagInput, target: int) -> tuple[str, str]:
        scale = ScaleRequest(
            cluster=inp.cluster,
            service=inp.service,
            desired_count=target,
            max_count=inp.max_workers,
            authority=self.authority(),
        )
        await scale_and_wait(self, scale, inp.poll_seconds, inp.scale_timeout_seconds)
        return await self._verify_lag(inp, target)

    async def _verify_lag(self, inp: KafkaLagInput, target: int) -> tuple[str, str]:
        req = LagRequest(group=inp.consumer_group, topics=[inp.topic], sample_seconds=0)
        timeout = inp.check_timeout_seconds
        before: LagResult = await self.step(
            "lag after scaling", read(KafkaActivities.consumer_lag, req, timeout), _lag_text
        )
        await workflow.sleep(timedelta(seconds=inp.settle_seconds))
        after: LagResult = await self.step(
            f"lag after {inp.settle_seconds:.0f}s",
            read(
                KafkaActivities.consumer_lag,
                req.model_copy(update={"sample_seconds": inp.sample_seconds}),
                timeout + inp.sample_seconds,
                True,
            ),
            _lag_text,
        )
        falling = after.total_lag < before.total_lag or (after.lag_rate or 0) < 0
        head = f"{inp.service} at {target} tasks; lag {before.total_lag} -> {after.total_lag}"
        if falling or after.total_lag == 0:
            self.record("lag falling", "ok", head)
            return f"{head}: falling", "resolved"
        self.record("lag persists", "info", head)
        slow = await self._slow_queries(inp)
        return (
            f"{head}: NOT falling. Slow queries: {slow}. Escalate to dba@company.com",
            "escalation",
        )

    async def _slow_queries(self, inp: KafkaLagInput) -> str:
        try:
            slow: SlowQueriesResult = await self.step(
                "slow queries (pg_stat_statements)",
                read(
                    QueryActivities.slow_queries,
                    SlowQueriesRequest(limit=10),
                    inp.check_timeout_seconds,
                ),
                describe_slow,
            )
        except ActivityError as err:
            return f"unavailable ({failure_message(err)})"
        return describe_slow(slow) or "none recorded"


def _lag_text(lag: LagResult) -> str:
    text = f"{lag.total_lag} behind"
    if lag.lag_rate is not None:
        text += f", {lag.lag_rate:+.0f}/s"
    return text
