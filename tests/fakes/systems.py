"""Fake activities for workflow-logic tests: same names and models as the real ones (which
have their own tests against moto, PostgreSQL and the sandbox), with recorded calls.

FakeSystems holds what db-failover talks to (RDS, CloudWatch, the service's health,
PostgreSQL) and what every gate talks to (Slack, PagerDuty, the approvals activities, the
incident log). The other procedures' fakes take it for their gate (`gate_activities`)."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.activity import _Definition
from temporalio.exceptions import ApplicationError

from activities.approvals import ApprovalActivities, EscalationPolicy
from activities.cloudwatch import MetricRequest, MetricSummary
from activities.email import EmailRequest, EmailResult
from activities.health import HealthRequest, HealthResult, WaitHealthyRequest
from activities.incidents import IncidentRecord, RecordResult
from activities.locks import LockActivities, LockConfig
from activities.notify import Notification, NotifyResult, PagerDutyEvent
from activities.postgres import IdleInTransactionRequest, IdleInTransactionResult
from activities.rds import (
    DbInstance,
    DbInstanceRequest,
    FailoverRequest,
    FailoverResult,
    WaitAvailableRequest,
    WaitAvailableResult,
)
from activities.requesters import EarlierRuns
from activities.tickets import TicketRequest, TicketResult
from activities.worker_mode import WorkerModeActivities

GATE_ACTIVITIES = {
    "notify.slack",
    "notify.pagerduty",
    "email.send",
    "tickets.open",
    "approvals.plan_escalation",
    "approvals.verify",
    "incidents.record",
    "worker.mode",
    "locks.request",
    "locks.state",
    "locks.holder_status",
}


def activity_name(fn: Callable[..., Any]) -> str:
    defn = _Definition.from_callable(fn)
    assert defn and defn.name
    return defn.name


async def no_earlier_runs(
    workflow_id: str, since: datetime, signature: str
) -> list[tuple[str, datetime]]:
    """Temporal's visibility, faked for workflow-logic tests: no other run of the id since.
    (The time-skipping server cannot list workflows; the real lookup runs in the dev-server
    tests: tests/workflows/test_gate.py, tests/e2e, tests/reliability.)"""
    return []


@dataclass
class FakeSystems:
    # The real approvals activities (pure logic over files), with a test roster.
    roster: tuple[Path, Path]
    # A game day: runs may shorten the gate's levels (`approval_timeout_seconds`).
    policy: EscalationPolicy = field(
        default_factory=lambda: EscalationPolicy(game_day=True, tickets=True)
    )
    multi_az: bool = True
    # The instance's status at diagnosis ("rebooting": a reboot already under way).
    db_status: str = "available"
    # Metrics under their alarms and /health/detailed 200: a failover is not indicated.
    healthy: bool = False
    # Sessions idle in transaction (above the run's threshold: a leak is reported).
    idle_count: int = 0
    failover_error: str | None = None
    notify_fails: bool = False
    calls: list[str] = field(default_factory=list)
    notes: list[Notification] = field(default_factory=list)
    pages: list[PagerDutyEvent] = field(default_factory=list)
    emails: list[EmailRequest] = field(default_factory=list)
    # Tickets by dedup key, as the ticket queue keeps them (one per key, however often asked).
    tickets: dict[str, TicketRequest] = field(default_factory=dict)
    incidents: list[IncidentRecord] = field(default_factory=list)
    # How many times the incident log fails before it answers (a database that is down).
    incident_log_failures: int = 0
    # When set, the wait for the instance holds until the test releases it.
    release_wait: asyncio.Event | None = None
    # The worker's own rules (the real activity: it only reports them).
    environment: str = "production"
    read_only: bool = False
    # Which runs a workflow id had since a time: Temporal's visibility (worker.earlier_runs)
    # on the dev server; faked on the time-skipping server, which cannot list workflows.
    earlier_runs: EarlierRuns = no_earlier_runs
    # The worker's intake key (checks alarm and hand-off starts); None: it has none.
    intake_key: str | None = None

    def activities(self) -> list[Any]:
        @activity.defn(name="rds.describe_instance")
        async def describe(req: DbInstanceRequest) -> DbInstance:
            self.calls.append("describe")
            return DbInstance(
                db_instance_id=req.db_instance_id,
                status=self.db_status,
                engine="postgres",
                instance_class="db.r6g.large",
                multi_az=self.multi_az,
                availability_zone="us-east-1a",
                secondary_availability_zone="us-east-1b" if self.multi_az else None,
            )

        @activity.defn(name="rds.force_failover")
        async def force_failover(req: FailoverRequest) -> FailoverResult:
            self.calls.append("force_failover")
            if self.failover_error:
                raise ApplicationError(self.failover_error, type="Boom", non_retryable=True)
            return FailoverResult(rebooted=True, reason="failover started", status="rebooting")

        @activity.defn(name="rds.wait_available")
        async def wait_available(req: WaitAvailableRequest) -> WaitAvailableResult:
            self.calls.append("wait_available")
            if self.release_wait:
                await self.release_wait.wait()
            # The primary moves only when a failover happened (ours, or one under way).
            moved = "force_failover" in self.calls or self.db_status == "failing-over"
            az = "us-east-1b" if moved else "us-east-1a"
            if req.previous_primary_az == az:
                # The real wait polls until its timeout (20 minutes, three attempts).
                raise ApplicationError(
                    f"still in {az}: no move to another AZ", type="WaitTimedOut", non_retryable=True
                )
            return WaitAvailableResult(
                status="available", availability_zone=az, waited_seconds=90, polls=18
            )

        @activity.defn(name="cloudwatch.metric_statistics")
        async def metric(req: MetricRequest) -> MetricSummary:
            self.calls.append(f"metric {req.metric_name}")
            return MetricSummary(
                metric_name=req.metric_name,
                datapoints=[],
                latest={"Average": 20 if self.healthy else 480},
                peak={},
            )

        @activity.defn(name="health.check")
        async def check(req: HealthRequest) -> HealthResult:
            self.calls.append(f"health {req.path}")
            code = 200 if self.healthy else 503
            return HealthResult(path=req.path, ok=self.healthy, status_code=code, latency_ms=3)

        @activity.defn(name="health.wait_healthy")
        async def wait_healthy(req: WaitHealthyRequest) -> HealthResult:
            self.calls.append("wait_healthy")
            return HealthResult(path=req.path, ok=True, status_code=200, latency_ms=3)

        @activity.defn(name="postgres.idle_in_transaction")
        async def idle(req: IdleInTransactionRequest) -> IdleInTransactionResult:
            self.calls.append("idle_in_transaction")
            oldest = 240.0 if self.idle_count else None
            return IdleInTransactionResult(count=self.idle_count, oldest_seconds=oldest)

        @activity.defn(name="notify.slack")
        async def slack(note: Notification) -> NotifyResult:
            if self.notify_fails:
                raise ApplicationError("Slack webhook answered 500", non_retryable=True)
            self.notes.append(note)
            return NotifyResult(delivered=True, detail="sent")

        @activity.defn(name="notify.pagerduty")
        async def pagerduty(event: PagerDutyEvent) -> NotifyResult:
            self.pages.append(event)
            return NotifyResult(delivered=True, detail=f"PagerDuty {event.action}")

        @activity.defn(name="email.send")
        async def email(req: EmailRequest) -> EmailResult:
            self.emails.append(req)
            return EmailResult(sent=True, detail=f"emailed {req.contact}")

        @activity.defn(name="tickets.open")
        async def ticket(req: TicketRequest) -> TicketResult:
            self.tickets.setdefault(req.dedup, req)
            number = list(self.tickets).index(req.dedup) + 1
            url = f"https://github.com/company/incidents/issues/{number}"
            return TicketResult(opened=True, detail=f"#{number} {url}", number=number, url=url)

        @activity.defn(name="incidents.record")
        async def record(incident: IncidentRecord) -> RecordResult:
            if self.incident_log_failures > 0:
                self.incident_log_failures -= 1
                raise ApplicationError("connection refused")
            self.incidents.append(incident)
            return RecordResult(incident_id=incident.incident_id, events=len(incident.timeline))

        approvals = ApprovalActivities(
            self.policy, *self.roster, intake_key=self.intake_key, earlier_runs=self.earlier_runs
        )
        # The real lock client (the lock itself is a workflow the test worker registers). A
        # free lock ends at once: one lingering after its test's worker stopped would hold the
        # time-skipping server, which skips no time while a workflow task waits for a worker.
        locks = LockActivities(LockConfig(check_seconds=1, linger_seconds=0))
        return [
            describe,
            force_failover,
            wait_available,
            metric,
            check,
            wait_healthy,
            idle,
            slack,
            pagerduty,
            email,
            ticket,
            record,
            approvals.plan_escalation,
            approvals.verify,
            WorkerModeActivities(self.environment, self.read_only).mode,
            *(locks.request, locks.state, locks.holder_status),
        ]

    def gate_activities(self) -> list[Any]:
        """Slack, PagerDuty, the approvals activities, the incident log and the worker's mode
        (every run asks it first) only."""
        return [a for a in self.activities() if activity_name(a) in GATE_ACTIVITIES]
