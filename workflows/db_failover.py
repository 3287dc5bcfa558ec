"""runbook.md, procedure 1: Database Failover."""

from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.cloudwatch import CloudWatchActivities, MetricRequest, MetricSummary
    from activities.health import HealthActivities, HealthRequest, HealthResult, WaitHealthyRequest
    from activities.postgres import (
        IdleInTransactionRequest,
        IdleInTransactionResult,
        PostgresActivities,
    )
    from activities.rds import (
        IN_PROGRESS,
        DbInstance,
        DbInstanceRequest,
        FailoverRequest,
        RdsActivities,
        WaitAvailableRequest,
    )

from workflows.base import MUTATE_RETRY, MUTATION_HEARTBEAT, READ_RETRY, failure_message
from workflows.gate import GatedRunbook
from workflows.lock import StalePlan, exclusive, lease_for, rds_instance, stale
from workflows.models import Finding, ParamSpec, RunbookInput, RunbookResult

CONNECTIONS_HIGH = 400  # the `db-connections-high` alarm's threshold
CPU_HIGH = 80.0  # the `db-cpu-high` alarm's threshold, percent
# Runs recorded before waited, when the instance was already rebooting or modifying, for a
# primary in another AZ that a plain reboot or a modification never brings.
WAIT_PATCH = "db-failover-waits-for-what-is-under-way"
# Runs recorded before failed a healthy database over on the ordinary approval.
HEALTHY_PATCH = "db-failover-healthy-needs-override"
# Statuses in which RDS is moving the primary to the standby: then the wait is for the move.
FAILING_OVER = frozenset({"failing-over", "rebooting-with-failover"})
# What says a database is healthy: available, under its alarms, /health/detailed 200.
HEALTH_CHECKS = ("rds instance", "DatabaseConnections", "CPUUtilization", "/health/detailed")
OVERRIDE = ParamSpec(
    name="override",
    word="healthy",
    help="the database looks healthy, a failover is not indicated; the approver must say so",
)


class DbFailoverInput(RunbookInput):
    db_instance_id: str = Field("prod-revenue-context-db", min_length=1, max_length=63)
    # RDS Multi-AZ failovers take 60-120 s and sometimes far longer.
    failover_timeout_seconds: int = Field(1200, ge=60, le=3 * 3600)
    health_timeout_seconds: int = Field(300, ge=10, le=3600)
    poll_seconds: float = Field(5.0, gt=0, le=60)
    # Above this many sessions idle in transaction after recovery, the run reports a leak.
    leak_threshold: int = Field(0, ge=0)


class FailoverPlan(BaseModel):
    action: Literal["failover", "wait_only", "refuse"]
    summary: str
    steps: list[str]
    from_az: str | None = None
    to_az: str | None = None
    # The instance's status at diagnosis.
    status: str | None = None
    # wait_only: a failover is under way, so the wait is for the primary in another AZ;
    # False: a plain reboot or a modification, it comes back where it was.
    expect_move: bool = True
    # Why a failover is not indicated (a healthy database); the approver must then say
    # `override=healthy`.
    not_indicated: str | None = None


def judge_instance(db: DbInstance) -> Finding:
    verdict = "ok" if db.status == "available" else "degraded"
    azs = f"primary {db.availability_zone}"
    if db.secondary_availability_zone:
        azs += f", standby {db.secondary_availability_zone}"
    return Finding(
        check="rds instance",
        verdict=verdict,
        summary=f"{db.db_instance_id} {db.status}, Multi-AZ {db.multi_az}, {azs}",
        data=db.model_dump(),
    )


def judge_metric(limit: float, unit: str) -> Callable[[MetricSummary], Finding]:
    def judge(metric: MetricSummary) -> Finding:
        value = metric.latest.get("Average")
        if value is None:
            return Finding(check=metric.metric_name, verdict="unavailable", summary="no datapoints")
        verdict = "failing" if value >= limit else "ok"
        return Finding(
            check=metric.metric_name,
            verdict=verdict,
            summary=f"{value:.0f}{unit} average (alarm at {limit:.0f}{unit})",
            data={"latest": value, "peak": metric.peak.get("Average")},
        )

    return judge


def judge_health(health: HealthResult) -> Finding:
    if health.ok:
        return Finding(check=health.path, verdict="ok", summary="200", data=health.model_dump())
    detail = health.error or f"HTTP {health.status_code}"
    down = [
        name
        for name, check in ((health.body or {}).get("checks") or {}).items()
        if isinstance(check, dict) and check.get("status") not in ("up", "ok", "healthy")
    ]
    if down:
        detail += f"; failing: {', '.join(down)}"
    return Finding(check=health.path, verdict="failing", summary=detail, data=health.model_dump())


def judge_idle(threshold: int) -> Callable[[IdleInTransactionResult], Finding]:
    def judge(idle: IdleInTransactionResult) -> Finding:
        oldest = f", oldest {idle.oldest_seconds:.0f}s" if idle.oldest_seconds else ""
        return Finding(
            check="idle in transaction",
            verdict="degraded" if idle.count > threshold else "ok",
            summary=f"{idle.count} sessions idle in transaction{oldest}",
            data=idle.model_dump(),
        )

    return judge


def looks_healthy(findings: list[Finding]) -> str | None:
    """Why the database looks healthy (every check of HEALTH_CHECKS ok), or None."""
    by_check = {f.check: f for f in findings}
    if not all(c in by_check and by_check[c].verdict == "ok" for c in HEALTH_CHECKS):
        return None
    return "; ".join(f"{c} {by_check[c].summary}" for c in HEALTH_CHECKS[1:])


def make_plan(
    inp: DbFailoverInput, db: DbInstance | None, findings: list[Finding] | None = None
) -> FailoverPlan:
    """Pure: what would be done, and why."""
    name = inp.db_instance_id
    if db is None:
        return FailoverPlan(
            action="refuse",
            summary=f"{name} could not be described: nothing is done blind",
            steps=["Escalate to the Database Team (dba@company.com)"],
        )
    if not db.multi_az:
        return FailoverPlan(
            action="refuse",
            summary=f"{name} is not Multi-AZ: a forced failover is impossible",
            steps=["Escalate to the Database Team (dba@company.com)"],
        )
    verify = [
        f"Wait until {name} is available on the new primary (typically 2-5 minutes)",
        "Verify /health/detailed answers 200",
        "Count sessions idle in transaction (connection leaks)",
    ]
    if db.status in IN_PROGRESS:
        return wait_plan(name, db, verify)
    if db.status != "available":
        return FailoverPlan(
            action="refuse",
            summary=f"{name} is {db.status!r}: a failover needs 'available'",
            steps=["Escalate to the Database Team (dba@company.com)"],
        )
    to_az = db.secondary_availability_zone or "the standby"
    summary = f"Fail {name} over from {db.availability_zone} to {to_az}"
    healthy = looks_healthy(findings or [])
    if healthy:
        summary = (
            f"A failover is not indicated: {name} is available, {healthy}. {summary} only if "
            f"the approver says so (approve with --set {OVERRIDE.name}={OVERRIDE.word})"
        )
    return FailoverPlan(
        action="failover",
        summary=summary,
        steps=[
            f"Reboot {name} with force-failover: primary {db.availability_zone} -> {to_az}",
            *verify,
        ],
        from_az=db.availability_zone,
        to_az=db.secondary_availability_zone,
        status=db.status,
        not_indicated=healthy,
    )


def wait_plan(name: str, db: DbInstance, verify: list[str]) -> FailoverPlan:
    """Already under way: no second reboot; wait for what RDS is doing."""
    moving = db.status in FAILING_OVER
    if moving:
        summary = f"{name} is already {db.status}: no second failover, only wait and verify"
    else:
        summary = (
            f"{name} is already {db.status}: nothing is rebooted again; wait until it is "
            "available again (the same AZ is fine: a reboot or a modification without failover "
            "stays there), then verify"
        )
        verify = [f"Wait until {name} is available again (the same AZ is fine)", *verify[1:]]
    return FailoverPlan(
        action="wait_only",
        summary=summary,
        steps=verify,
        from_az=db.availability_zone,
        status=db.status,
        expect_move=moving,
    )


@workflow.defn(name="DatabaseFailover")
class DatabaseFailover(GatedRunbook):
    procedure = "db-failover"

    @workflow.run
    async def run(self, inp: DbFailoverInput) -> RunbookResult:
        self.begin(inp, inp.db_instance_id)
        self.tag(inp.severity)
        findings, db = await self._diagnose(inp)
        plan = self._versioned(make_plan(inp, db, findings))
        self.set_phase("plan")
        self.record("plan", "info", plan.summary)
        if plan.action == "refuse":
            await self.notify(
                "failed", f"db-failover refused for {inp.db_instance_id}", plan.summary, {}
            )
            return self.finish("refused", plan.summary, findings, plan.steps)
        if inp.dry_run:
            return self.finish("dry_run", f"Dry run: {plan.summary}", findings, plan.steps)
        if plan.action == "failover":
            params = [OVERRIDE] if plan.not_indicated else None
            decision = await self.gate("failover", plan.summary, plan.steps, params)
            if not decision.approved:
                return await self.not_approved(findings, plan.steps)
            if plan.not_indicated:
                self.record(
                    "override healthy",
                    "info",
                    f"{', '.join(decision.approvers)} failed over a database that looks healthy",
                )
        failover = plan.action == "failover"  # wait_only changes nothing: no lock
        lease = lease_for(60 + 20, inp.failover_timeout_seconds, inp.health_timeout_seconds)
        try:
            async with exclusive(
                self,
                [rds_instance(inp.db_instance_id)] if failover else [],
                lease,
                partial(self._stale, inp, plan) if failover else None,
            ):
                summary = await self._remediate(inp, plan)
        except StalePlan as err:
            return await stale(self, err, findings, plan.steps)
        except ActivityError as err:
            await self._fail(plan, err)
        await self.notify("resolved", f"db-failover done for {inp.db_instance_id}", summary, {})
        return self.finish("completed", summary, findings, plan.steps)

    async def _diagnose(self, inp: DbFailoverInput) -> tuple[list[Finding], DbInstance | None]:
        dims = {"DBInstanceIdentifier": inp.db_instance_id}
        results = await self.check_all(
            self.check(
                "rds instance",
                self._read(
                    RdsActivities.describe_instance,
                    DbInstanceRequest(db_instance_id=inp.db_instance_id),
                ),
                judge_instance,
            ),
            self.check(
                "DatabaseConnections",
                self._read(
                    CloudWatchActivities.metric_statistics,
                    MetricRequest(metric_name="DatabaseConnections", dimensions=dims, minutes=10),
                ),
                judge_metric(CONNECTIONS_HIGH, ""),
            ),
            self.check(
                "CPUUtilization",
                self._read(
                    CloudWatchActivities.metric_statistics,
                    MetricRequest(metric_name="CPUUtilization", dimensions=dims, minutes=10),
                ),
                judge_metric(CPU_HIGH, "%"),
            ),
            self.check(
                "/health/detailed",
                self._read(HealthActivities.check, HealthRequest(path="/health/detailed")),
                judge_health,
            ),
            self.check(
                "idle in transaction",
                self._read(PostgresActivities.idle_in_transaction, IdleInTransactionRequest()),
                judge_idle(inp.leak_threshold),
            ),
        )
        findings = [finding for finding, _ in results]
        db = results[0][1]
        return findings, db

    @staticmethod
    def _versioned(plan: FailoverPlan) -> FailoverPlan:
        """The plan as the run's code version acts on it: runs recorded before these
        changes replay as they ran."""
        if plan.action == "wait_only" and not workflow.patched(WAIT_PATCH):
            plan = plan.model_copy(update={"expect_move": True})
        if plan.not_indicated and not workflow.patched(HEALTHY_PATCH):
            plan = plan.model_copy(update={"not_indicated": None})
        return plan

    def _read(self, method: Any, arg: Any) -> Any:
        return workflow.execute_activity_method(
            method, arg, start_to_close_timeout=timedelta(seconds=20), retry_policy=READ_RETRY
        )

    async def _stale(self, inp: DbFailoverInput, plan: FailoverPlan) -> str | None:
        """Once the lock is held: is the instance still available on the primary the approved
        failover starts from?"""
        db: DbInstance = await self.step(
            "re-read instance",
            self._read(
                RdsActivities.describe_instance,
                DbInstanceRequest(db_instance_id=inp.db_instance_id),
            ),
            lambda d: f"{d.status} in {d.availability_zone}",
        )
        if db.status == "available" and db.availability_zone == plan.from_az:
            return None
        return (
            f"{inp.db_instance_id} is now {db.status} in {db.availability_zone}, not available "
            f"in {plan.from_az} where the approved failover starts: another change came first"
        )

    async def _remediate(self, inp: DbFailoverInput, plan: FailoverPlan) -> str:
        self.set_phase("act")
        name = inp.db_instance_id
        if plan.action == "failover":
            await self.step(
                "reboot with force-failover",
                workflow.execute_activity_method(
                    RdsActivities.force_failover,
                    FailoverRequest(
                        db_instance_id=name,
                        expected_primary_az=plan.from_az,
                        authority=self.authority(),
                    ),
                    start_to_close_timeout=timedelta(seconds=60),
                    heartbeat_timeout=MUTATION_HEARTBEAT,
                    retry_policy=MUTATE_RETRY,
                ),
                lambda r: r.reason,
            )
        self.set_phase("verify")
        available = await self.step(
            "wait until available",
            workflow.execute_activity_method(
                RdsActivities.wait_available,
                WaitAvailableRequest(
                    db_instance_id=name,
                    previous_primary_az=plan.from_az if plan.expect_move else None,
                    poll_seconds=inp.poll_seconds,
                ),
                start_to_close_timeout=timedelta(seconds=inp.failover_timeout_seconds),
                heartbeat_timeout=timedelta(seconds=max(30, inp.poll_seconds * 4)),
                retry_policy=READ_RETRY,
            ),
            lambda r: f"available in {r.availability_zone} after {r.waited_seconds:.0f}s",
        )
        await self.step(
            "verify /health/detailed",
            workflow.execute_activity_method(
                HealthActivities.wait_healthy,
                WaitHealthyRequest(path="/health/detailed"),
                start_to_close_timeout=timedelta(seconds=inp.health_timeout_seconds),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=READ_RETRY,
            ),
            lambda r: f"200 in {r.latency_ms:.0f} ms",
        )
        leaks = await self._leak_check(inp)
        where = available.availability_zone
        head = f"{name} available on {where}"
        if not plan.expect_move:
            moved = (
                "the same AZ: no failover happened"
                if where == plan.from_az
                else f"moved from {plan.from_az}: it was a failover"
            )
            head = (
                f"{name} was {plan.status}: nothing was rebooted; available again on {where} "
                f"({moved})"
            )
        return f"{head}, /health/detailed 200; {leaks}"

    async def _leak_check(self, inp: DbFailoverInput) -> str:
        try:
            result: IdleInTransactionResult = await self.step(
                "check idle-in-transaction sessions",
                self._read(PostgresActivities.idle_in_transaction, IdleInTransactionRequest()),
                lambda r: f"{r.count} idle in transaction",
            )
        except ActivityError as err:
            return f"leak check unavailable ({failure_message(err)})"
        if result.count > inp.leak_threshold:
            self.record("connection leak", "info", f"{result.count} sessions idle in transaction")
            return f"{result.count} sessions idle in transaction: look for a connection leak"
        return "no sessions idle in transaction"

    async def _fail(self, plan: FailoverPlan, err: ActivityError) -> None:
        reason = failure_message(err)
        self._summary, self._plan = f"{plan.summary}: {reason}", plan.steps
        await self.fail(plan.summary, reason, "Escalate to the Database Team (dba@company.com).")
