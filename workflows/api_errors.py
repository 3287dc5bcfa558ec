"""runbook.md, procedure 3: API Error Rate Spike."""

from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.cloudwatch import CloudWatchActivities, MetricRequest, MetricSummary
    from activities.ecs import (
        EcsActivities,
        EcsService,
        ScaleRequest,
        ServicesRequest,
        TasksRequest,
    )
    from activities.health import HealthActivities, HealthRequest, WaitHealthyRequest
    from activities.logs import LogErrorsRequest, LogsActivities
    from activities.prometheus import (
        BreakersRequest,
        CircuitBreakers,
        ErrorRate,
        ErrorRateRequest,
        PrometheusActivities,
    )
    from activities.redis_info import RedisActivities, RedisStats, RedisStatsRequest

from workflows.base import failure_message, problems
from workflows.db_failover import DatabaseFailover, DbFailoverInput
from workflows.diagnosis import (
    first_service,
    judge_health,
    judge_logs,
    judge_one_service,
    judge_tasks,
    read,
    recent_deploy,
    scale_and_wait,
    scale_stale,
)
from workflows.gate import GatedRunbook
from workflows.handoffs import CHOICE, choice, hand_off, handoff_fields, start_command
from workflows.handoffs import GATE as HANDOFF_GATE
from workflows.high_memory import HighMemory, HighMemoryInput
from workflows.lock import StalePlan, ecs_service, exclusive, lease_for, stale
from workflows.models import MAX_RESOURCE, Finding, ParamSpec, RunbookInput, RunbookResult
from workflows.rollback import RUNBOOK_SERVICES, Rollback, RollbackInput

CPU_HIGH = 80.0  # the `db-cpu-high` alarm's threshold, percent
# runbook.md 5, When to Rollback: "Deployment causes error rate spike"; a deploy this recent
# is a suspect.
RECENT_DEPLOY = timedelta(hours=1)
Recommendation = Literal["scale", "db-failover", "high-memory", "rollback", "escalate", "none"]
# What api-errors may hand off to (workflows/handoffs.py), in the runbook's order of causes.
HANDOFFS = ("db-failover", "high-memory", "rollback")


class ApiErrorsInput(RunbookInput):
    cluster: str = Field("prod-revenue-context", min_length=1, max_length=MAX_RESOURCE)
    service: str = Field("api", min_length=1, max_length=MAX_RESOURCE)
    log_group: str = Field("/ecs/production/api", min_length=1, max_length=MAX_RESOURCE)
    log_minutes: int = Field(10, ge=1, le=24 * 60)
    db_instance_id: str = Field("prod-revenue-context-db", min_length=1, max_length=MAX_RESOURCE)
    cpu_minutes: int = Field(30, ge=5, le=24 * 60)
    # runbook.md 3, Symptoms: "5xx errors > 5%".
    error_rate_threshold: float = Field(0.05, gt=0, lt=1)
    error_window_seconds: float = Field(10.0, ge=0.5, le=300)
    hit_rate_min: float = Field(0.8, ge=0, le=1)
    # runbook.md 3.6: "--desired-count 5".
    target_count: int = Field(5, ge=1, le=100)
    max_count: int = Field(10, ge=1, le=100)
    check_timeout_seconds: float = Field(30.0, ge=1, le=600)
    scale_timeout_seconds: int = Field(600, ge=10, le=3600)
    verify_timeout_seconds: int = Field(600, ge=10, le=3600)
    poll_seconds: float = Field(5.0, gt=0, le=60)


class ApiPlan(BaseModel):
    action: Literal["scale", "handoff", "none"]
    recommendation: Recommendation
    summary: str
    steps: list[str]
    current: int = 0
    target: int = 0
    # handoff: the procedures the approver may choose to start, the recommended one first.
    offers: list[str] = []


def judge_cpu(metric: MetricSummary) -> Finding:
    value = metric.latest.get("Average")
    if value is None:
        return Finding(check="rds CPUUtilization", verdict="unavailable", summary="no datapoints")
    peak = metric.peak.get("Average", value)
    return Finding(
        check="rds CPUUtilization",
        verdict="failing" if value >= CPU_HIGH else "ok",
        summary=f"{value:.0f}% now, peak {peak:.0f}% (alarm at {CPU_HIGH:.0f}%)",
        data={"latest": value, "peak": peak},
    )


def judge_redis(hit_rate_min: float):  # type: ignore[no-untyped-def]
    def judge(stats: RedisStats) -> Finding:
        hit = "n/a" if stats.hit_rate is None else f"{stats.hit_rate:.0%}"
        summary = (
            f"hit rate {hit}, {stats.rejected_connections} rejected connections, "
            f"{stats.ops_per_sec} ops/s"
        )
        low_hits = stats.hit_rate is not None and stats.hit_rate < hit_rate_min
        verdict = "degraded" if stats.rejected_connections or low_hits else "ok"
        return Finding(check="redis", verdict=verdict, summary=summary, data=stats.model_dump())

    return judge


def judge_breakers(breakers: CircuitBreakers) -> Finding:
    if not breakers.exported:
        return Finding(check="circuit breakers", verdict="ok", summary="none exported")
    states = ", ".join(f"{n} {s}" for n, s in sorted(breakers.states.items()))
    half = [n for n, s in breakers.states.items() if s == "half_open"]
    verdict = "failing" if breakers.open else "degraded" if half else "ok"
    return Finding(
        check="circuit breakers", verdict=verdict, summary=states, data=breakers.model_dump()
    )


def judge_error_rate(threshold: float):  # type: ignore[no-untyped-def]
    def judge(rate: ErrorRate) -> Finding:
        if rate.share is None:
            return Finding(check="5xx rate", verdict="unavailable", summary="no requests served")
        return Finding(
            check="5xx rate",
            verdict="failing" if rate.share > threshold else "ok",
            summary=f"{rate.share:.1%} of {rate.requests:.0f} requests in "
            f"{rate.window_seconds:.0f}s (alarm at {threshold:.0%})",
            data=rate.model_dump(),
        )

    return judge


def make_plan(
    inp: ApiErrorsInput,
    findings: dict[str, Finding],
    svc: EcsService | None,
    oom_to_high_memory: bool = True,
    now: datetime | None = None,
) -> ApiPlan:
    """Pure: one recommendation from the findings, in the runbook's order of causes.
    `oom_to_high_memory` is off only for runs recorded before OOM kills pointed there; `now`
    is given by runs that hand off (None: recorded before hand-offs, which only recommend)."""
    plan = _recommend(inp, findings, svc, oom_to_high_memory, now)
    if now is None or plan.recommendation not in HANDOFFS:
        return plan
    offers = [
        p for p in HANDOFFS if p == plan.recommendation or _points_at(p, inp, findings, svc, now)
    ]
    offers.sort(key=lambda p: p != plan.recommendation)
    command = start_command(plan.recommendation, inp.severity)
    return plan.model_copy(
        update={
            "action": "handoff",
            "offers": offers,
            "steps": [
                f"Start {p} (`--set start={p}`); it diagnoses again and asks at its own gate"
                for p in offers
            ]
            + [f"Or reject, and run it by hand: {command}"],
        }
    )


def _points_at(
    procedure: str,
    inp: ApiErrorsInput,
    findings: dict[str, Finding],
    svc: EcsService | None,
    now: datetime,
) -> bool:
    """Whether the findings point at `procedure` too (an offer beside the recommendation)."""
    if procedure == "db-failover":
        return _db_cause(findings)
    if procedure == "high-memory":
        return _oom_kills(findings.get(f"ecs {inp.service} tasks")) > 0
    rollable = inp.service in RUNBOOK_SERVICES
    return rollable and recent_deploy(svc, now, RECENT_DEPLOY) is not None


def _db_cause(findings: dict[str, Finding]) -> bool:
    health = findings.get("/health/detailed")
    db_down = health is not None and "database" in health.summary and health.verdict == "failing"
    cpu = findings.get("rds CPUUtilization")
    return db_down or (cpu is not None and cpu.verdict == "failing")


def _recommend(
    inp: ApiErrorsInput,
    findings: dict[str, Finding],
    svc: EcsService | None,
    oom_to_high_memory: bool,
    now: datetime | None,
) -> ApiPlan:
    verdict = {name: f.verdict for name, f in findings.items()}
    health = findings.get("/health/detailed")
    db_down = health is not None and "database" in health.summary and health.verdict == "failing"
    if verdict.get("rds CPUUtilization") == "failing" or db_down:
        return ApiPlan(
            action="none",
            recommendation="db-failover",
            summary="The database is the cause (CPU high or down in /health/detailed): "
            f"run db-failover for {inp.db_instance_id}",
            steps=[f"runbook start db-failover --severity {inp.severity}"],
        )
    if verdict.get("circuit breakers") == "failing":
        open_ = findings["circuit breakers"].data.get("open", [])
        return ApiPlan(
            action="none",
            recommendation="escalate",
            summary=f"External dependency failing (circuit breaker open: {', '.join(open_)}): "
            "scaling would not help; escalate",
            steps=["Escalate to the on-call engineer's manager; contact the provider"],
        )
    oom = _oom_kills(findings.get(f"ecs {inp.service} tasks"))
    if oom_to_high_memory and oom:
        # More tasks would be killed the same way: the memory is the cause (runbook.md 4).
        return ApiPlan(
            action="none",
            recommendation="high-memory",
            summary=f"{oom} {inp.service} task(s) stopped out of memory: scaling would not "
            "help; run high-memory",
            steps=[f"runbook start high-memory --severity {inp.severity}"],
        )
    errors_high = verdict.get("5xx rate") == "failing"
    tasks_bad = verdict.get(f"ecs {inp.service} tasks") in ("degraded", "failing")
    capacity_bad = verdict.get(f"ecs {inp.service}") in ("degraded", "failing")
    if not (errors_high or tasks_bad or capacity_bad):
        return ApiPlan(
            action="none", recommendation="none", summary="Error rate and tasks normal", steps=[]
        )
    deploy = None
    if now is not None and inp.service in RUNBOOK_SERVICES:  # what rollback can roll back
        deploy = recent_deploy(svc, now, RECENT_DEPLOY)
    if deploy:
        return ApiPlan(
            action="none",
            recommendation="rollback",
            summary=f"Errors high after a deploy ({inp.service} {deploy}): scaling would "
            "spread the bad version; run rollback",
            steps=[start_command("rollback", inp.severity)],
        )
    if svc is None:
        return ApiPlan(
            action="none",
            recommendation="escalate",
            summary=f"Errors high but ECS service {inp.service} could not be described: escalate",
            steps=["Escalate to Infrastructure (devops@company.com)"],
        )
    current = svc.desired_count
    target = min(max(inp.target_count, current + 1), inp.max_count)
    if target <= current:
        return ApiPlan(
            action="none",
            recommendation="escalate",
            summary=f"{inp.service} already at {current} tasks (cap {inp.max_count}): escalate",
            steps=["Escalate to the on-call engineer's manager"],
        )
    return ApiPlan(
        action="scale",
        recommendation="scale",
        summary=f"Scale {inp.service} from {current} to {target} tasks "
        "(errors high with unhealthy or crashed tasks)",
        steps=[
            f"Set {inp.service} desired count {current} -> {target}",
            f"Wait until {target} tasks run",
            f"Verify the 5xx share falls under {inp.error_rate_threshold:.0%}",
            "Verify /health/detailed answers 200",
        ],
        current=current,
        target=target,
    )


def handoff_target(
    inp: ApiErrorsInput, procedure: str, base: dict[str, Any]
) -> tuple[type, RunbookInput, str | None]:
    """The workflow, input and resource of the procedure the approver chose (HANDOFFS)."""
    if procedure == "db-failover":
        failover = DbFailoverInput(db_instance_id=inp.db_instance_id, **base)
        return DatabaseFailover, failover, inp.db_instance_id
    if procedure == "high-memory":
        memory = HighMemoryInput(cluster=inp.cluster, service=inp.service, **base)
        return HighMemory, memory, inp.service
    rollback = RollbackInput(
        cluster=inp.cluster, services=[inp.service], reason="error-rate-spike", **base
    )
    return Rollback, rollback, None


def _oom_kills(tasks: Finding | None) -> int:
    reasons: dict[str, int] = tasks.data.get("crash_reasons", {}) if tasks else {}
    return sum(n for reason, n in reasons.items() if "OutOfMemory" in reason)


@workflow.defn(name="ApiErrorRateSpike")
class ApiErrorRateSpike(GatedRunbook):
    procedure = "api-errors"

    @workflow.run
    async def run(self, inp: ApiErrorsInput) -> RunbookResult:
        self.begin(inp, inp.service)
        self.tag(inp.severity)
        findings, svc = await self._diagnose(inp)
        oom_first = workflow.patched("api-errors-oom-high-memory")
        now = workflow.now() if workflow.patched("api-errors-handoffs") else None
        plan = make_plan(inp, {f.check: f for f in findings}, svc, oom_first, now)
        self.set_phase("plan")
        self.record("plan", "info", f"{plan.recommendation}: {plan.summary}")
        if plan.action == "handoff" and not inp.dry_run:
            return await self._hand_off(inp, plan, findings)
        if plan.action == "none":
            if plan.recommendation != "none":
                await self.notify(
                    "escalation", f"api-errors: {plan.recommendation}", plan.summary, {}
                )
            return self.finish("completed", plan.summary, findings, plan.steps)
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
                    maximum=inp.max_count,
                    default=plan.target,
                    integer=True,
                    help=f"{inp.service} tasks to run",
                )
            ],
        )
        if not decision.approved:
            return await self.not_approved(findings, plan.steps)
        target = int(decision.number("desired_count"))
        lease = lease_for(60 + inp.scale_timeout_seconds, 2 * inp.verify_timeout_seconds)
        recheck = partial(
            scale_stale, self, inp.cluster, inp.service, plan.current, inp.check_timeout_seconds
        )
        try:
            async with exclusive(self, [ecs_service(inp.cluster, inp.service)], lease, recheck):
                summary = await self._remediate(inp, target)
        except StalePlan as err:
            return await stale(self, err, findings, plan.steps)
        except (ActivityError, ApplicationError) as err:
            escalate = "Escalate to the Engineering Manager."
            await self.fail(plan.summary, failure_message(err), escalate)
        await self.notify("resolved", f"api-errors: {inp.service} scaled to {target}", summary, {})
        return self.finish("completed", summary, findings, plan.steps)

    async def _hand_off(
        self, inp: ApiErrorsInput, plan: ApiPlan, findings: list[Finding]
    ) -> RunbookResult:
        """The approver chooses which offered procedure to start; it runs under its own id
        with its own gate (this approval is not an approval of what it changes)."""
        decision = await self.gate(HANDOFF_GATE, plan.summary, plan.steps, [choice(plan.offers)])
        if not decision.approved:
            return await self.not_approved(findings, plan.steps, "nothing was started")
        procedure = decision.params[CHOICE]
        try:
            target = handoff_target(inp, procedure, handoff_fields(inp, decision))
        except ValidationError as err:  # e.g. an instance id longer than RDS allows
            await self.fail(plan.summary, f"{procedure} cannot start: {problems(err)}")
        started = await hand_off(self, procedure, *target)
        verb = "started" if started.started else "already running, linked"
        summary = f"{plan.summary}; {procedure} {verb}: {started.workflow_id}"
        await self.notify(
            "info", f"api-errors handed off to {procedure}", summary, {"run": started.workflow_id}
        )
        return self.finish("completed", summary, findings, plan.steps)

    async def _diagnose(self, inp: ApiErrorsInput) -> tuple[list[Finding], EcsService | None]:
        timeout = inp.check_timeout_seconds
        dims = {"DBInstanceIdentifier": inp.db_instance_id}
        results = await self.check_all(
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
                f"ecs {inp.service} tasks",
                read(
                    EcsActivities.list_tasks,
                    TasksRequest(cluster=inp.cluster, service=inp.service),
                    timeout,
                ),
                judge_tasks,
            ),
            self.check(
                f"logs {inp.log_group}",
                read(
                    LogsActivities.recent_errors,
                    LogErrorsRequest(
                        log_group=inp.log_group,
                        minutes=inp.log_minutes,
                        terms=["ERROR", "CRITICAL"],
                    ),
                    timeout,
                ),
                judge_logs,
            ),
            self.check(
                "/health/detailed",
                read(HealthActivities.check, HealthRequest(path="/health/detailed"), timeout),
                judge_health,
            ),
            self.check(
                "rds CPUUtilization",
                read(
                    CloudWatchActivities.metric_statistics,
                    MetricRequest(
                        metric_name="CPUUtilization", dimensions=dims, minutes=inp.cpu_minutes
                    ),
                    timeout,
                ),
                judge_cpu,
            ),
            self.check(
                "redis",
                read(RedisActivities.info_stats, RedisStatsRequest(), timeout),
                judge_redis(inp.hit_rate_min),
            ),
            self.check(
                "circuit breakers",
                read(PrometheusActivities.circuit_breakers, BreakersRequest(), timeout),
                judge_breakers,
            ),
            self.check(
                "5xx rate",
                read(
                    PrometheusActivities.error_rate,
                    ErrorRateRequest(window_seconds=inp.error_window_seconds),
                    timeout + inp.error_window_seconds,
                ),
                judge_error_rate(inp.error_rate_threshold),
            ),
        )
        return [f for f, _ in results], first_service(results[0][1])

    async def _remediate(self, inp: ApiErrorsInput, target: int) -> str:
        scale = ScaleRequest(
            cluster=inp.cluster,
            service=inp.service,
            desired_count=target,
            max_count=inp.max_count,
            authority=self.authority(),
        )
        await scale_and_wait(self, scale, inp.poll_seconds, inp.scale_timeout_seconds)
        rate = await self._wait_error_rate(inp)
        await self.step(
            "verify /health/detailed",
            workflow.execute_activity_method(
                HealthActivities.wait_healthy,
                WaitHealthyRequest(path="/health/detailed", poll_seconds=inp.poll_seconds),
                start_to_close_timeout=timedelta(seconds=inp.verify_timeout_seconds),
                heartbeat_timeout=timedelta(seconds=max(30, inp.poll_seconds * 4)),
            ),
            lambda r: f"200 in {r.latency_ms:.0f} ms",
        )
        return f"{inp.service} at {target} tasks; 5xx {rate:.1%}; /health/detailed 200"

    async def _wait_error_rate(self, inp: ApiErrorsInput) -> float:
        """Measure the 5xx share until it is under the threshold (or the verify budget ends)."""
        deadline = workflow.now() + timedelta(seconds=inp.verify_timeout_seconds)
        req = ErrorRateRequest(window_seconds=inp.error_window_seconds)
        attempt = 0
        while True:
            attempt += 1
            rate: ErrorRate = await self.step(
                f"5xx rate, measure {attempt}",
                read(
                    PrometheusActivities.error_rate,
                    req,
                    inp.check_timeout_seconds + inp.error_window_seconds,
                ),
                lambda r: (
                    "no requests" if r.share is None else f"{r.share:.1%} of {r.requests:.0f}"
                ),
            )
            share = rate.share or 0.0
            if share <= inp.error_rate_threshold:
                return share
            if workflow.now() >= deadline:
                raise ApplicationError(
                    f"5xx share still {share:.1%} after {inp.verify_timeout_seconds}s",
                    type="NotRecovered",
                    non_retryable=True,
                )
            await workflow.sleep(timedelta(seconds=inp.poll_seconds))
