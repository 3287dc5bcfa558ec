"""The certificate expiry check (schedule `cert-expiry-check`, daily): read-only.

It lists the certificates the HTTPS listeners serve and, for each domain whose certificate is
within `days_before_expiry` of expiry, expired, or one ACM will not renew itself (imported),
starts the cert-renewal runbook exactly as the `cert-expiring` alarm would: workflow id
`cert-renewal/<domain>`, signal-with-start with conflict policy USE_EXISTING, so a renewal
that is running (waiting 72 hours for ACM, or for an approver) is signalled, never started a
second time. The UTC day is the episode: once a renewal for a domain has ended today (say it
was rejected), the check does not start another one today; tomorrow's check asks again.

Why a detached start and not a child workflow: a renewal lives for hours or days and must not
depend on (or be cancelled with) a check that is done in seconds, and it must be the same
workflow whoever starts it: the schedule, the alarm webhook or a person with the CLI.
"""

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.acm import AcmActivities, Certificate, Certificates, CertificatesRequest
    from activities.alarms import AlarmActivities, AlarmOutcome, AlarmStart
    from activities.elb import ElbActivities, ListenersRequest, ListenersResult

from workflows import registry
from workflows.base import READ_RETRY
from workflows.cert_renewal import verdict
from workflows.models import (
    ENVIRONMENT_PATTERN,
    MAX_TEXT,
    AlarmDelivery,
    Resource,
    Severity,
    Trigger,
)

ALARM = "cert-expiry-check"

Action = Literal[
    "none", "not_installed", "started", "signalled", "suppressed", "not_running", "coalesced"
]


class CertExpiryCheckInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days_before_expiry: int = Field(30, ge=1, le=365)
    # Load balancer names; empty: the worker's configured ALB(s) (ALB_NAMES), `*`: all.
    load_balancers: list[Resource] = Field([], max_length=20)
    procedure: str = Field("cert-renewal", max_length=64)
    # The environment the started runbook acts in (the schedule's own).
    environment: str = Field("production", pattern=ENVIRONMENT_PATTERN)
    # Who asked: the schedule sends these (RunbookInput's fields).
    trigger: Trigger = "schedule"
    requested_by: str = Field("schedule:cert-expiry-check", min_length=1, max_length=100)


class CertCheckRow(BaseModel):
    arn: str
    domain: str
    listeners: list[str]
    status: str
    type: str
    renewal_eligibility: str
    not_after: datetime | None
    days_left: float | None
    verdict: str
    reason: str
    action: Action = "none"
    workflow_id: str | None = None
    detail: str = ""


class CertExpiryCheckResult(BaseModel):
    checked_at: datetime
    load_balancers: list[str]
    certificates: list[CertCheckRow]
    # Listener certificates ACM does not know (deleted, or in IAM).
    unknown: list[str] = []

    @property
    def renewals(self) -> dict[str, Action]:
        return {row.domain: row.action for row in self.certificates if row.action != "none"}


def severity_for(rows: list[CertCheckRow]) -> Severity:
    """Expired: clients already fail the TLS handshake (P1); otherwise there is time (P2)."""
    return "P1" if any(row.verdict == "expired" for row in rows) else "P2"


@workflow.defn(name="CertExpiryCheck")
class CertExpiryCheck:
    @workflow.run
    async def run(self, inp: CertExpiryCheckInput) -> CertExpiryCheckResult:
        now = workflow.now()
        listeners: ListenersResult = await workflow.execute_activity_method(
            ElbActivities.https_listeners,
            ListenersRequest(load_balancers=inp.load_balancers),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=READ_RETRY,
        )
        by_arn: dict[str, list[str]] = {}
        for listener in listeners.listeners:
            if listener.certificate_arn:
                by_arn.setdefault(listener.certificate_arn, []).append(listener.label)
        result = CertExpiryCheckResult(
            checked_at=now, load_balancers=listeners.load_balancers, certificates=[]
        )
        if not by_arn:
            return result
        described: Certificates = await workflow.execute_activity_method(
            AcmActivities.describe_certificates,
            CertificatesRequest(arns=sorted(by_arn)),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=READ_RETRY,
        )
        result.unknown = described.missing
        result.certificates = [
            self._row(cert, by_arn[cert.arn], now, inp) for cert in described.certificates
        ]
        due: dict[str, list[CertCheckRow]] = {}
        for row in result.certificates:
            if row.verdict != "ok":
                due.setdefault(row.domain, []).append(row)
        for domain in sorted(due):  # one renewal per domain, whatever its listeners
            await self._renew(inp, domain, due[domain], now)
        return result

    @staticmethod
    def _row(
        cert: Certificate, labels: list[str], now: datetime, inp: CertExpiryCheckInput
    ) -> CertCheckRow:
        judged, reason = verdict(cert, now, inp.days_before_expiry)
        days = cert.days_left(now)
        return CertCheckRow(
            arn=cert.arn,
            domain=cert.domain,
            listeners=labels,
            status=cert.status,
            type=cert.type,
            renewal_eligibility=cert.renewal_eligibility,
            not_after=cert.not_after,
            days_left=round(days, 2) if days is not None else None,
            verdict=judged,
            reason=reason,
        )

    async def _renew(
        self, inp: CertExpiryCheckInput, domain: str, rows: list[CertCheckRow], now: datetime
    ) -> None:
        procedure = registry.PROCEDURES.get(inp.procedure)
        reason = "; ".join(f"{r.domain} on {', '.join(r.listeners)} {r.reason}" for r in rows)
        if procedure is None:
            workflow.logger.warning("%s: %s is not installed", reason, inp.procedure)
            for row in rows:
                row.action, row.detail = "not_installed", f"{inp.procedure} is not installed"
            return
        target = procedure.input_model.model_validate(
            {
                "domain": domain,
                "environment": inp.environment,
                "severity": severity_for(rows),
                "trigger": inp.trigger,
                "requested_by": inp.requested_by,
                "load_balancers": inp.load_balancers,
                "days_before_expiry": inp.days_before_expiry,
            }
        )
        delivery = AlarmDelivery(
            source="schedule", alarm=ALARM, received_at=now, reason=reason[:MAX_TEXT]
        )
        outcome: AlarmOutcome = await workflow.execute_activity_method(
            AlarmActivities.start_once,
            AlarmStart(
                workflow_type=procedure.workflow_type,
                workflow_id=procedure.workflow_id(target),
                task_queue=workflow.info().task_queue,
                input=target.model_dump(mode="json"),
                delivery=delivery.model_dump(mode="json"),
                episode_started_at=datetime(now.year, now.month, now.day, tzinfo=UTC),
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=READ_RETRY,
        )
        for row in rows:
            row.action, row.workflow_id = outcome.action, outcome.workflow_id
            row.detail = outcome.detail or reason
