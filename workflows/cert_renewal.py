"""runbook.md, procedure 7: Certificate Expiration.

Diagnose the certificate each HTTPS listener serves for the domain (expiry, status, renewal
eligibility), the other certificates ACM holds for it and the domain's hosted zone; plan;
request a new certificate with DNS validation, publish its validation CNAME and wait until
ACM has issued it; ask for approval; make it the default certificate of the listeners; verify
they serve it; notify.

Why the new certificate is obtained BEFORE the approval gate: requesting a certificate and
adding a `_<token>.<domain>` CNAME change nothing a client sees (the listener still serves
the old certificate), are free, and are idempotent (ACM's token, a tag, an UPSERT). The one
change that matters, swapping the listener's certificate, is behind the gate. Done the other
way round, an approver would approve a swap to a certificate that does not exist yet and the
approval could wait up to 72 hours for ACM before taking effect, against a certificate that
may expire meanwhile; this way the approver sees the ISSUED certificate (its ARN, its expiry)
and the swap follows the approval in seconds. A rejected run leaves an ISSUED certificate
that nothing uses; the next run finds it and offers it instead of requesting another one.

Why the wait for ISSUED is one long activity with heartbeats rather than durable timers in
the workflow: ACM keeps validating for up to 72 hours. A workflow polling every 30 s on
timers would write about 8,600 timer+activity pairs (over Temporal's history limits, so it
would need continue-as-new); one activity writes three events, its heartbeat timeout notices
a lost worker within a couple of polls, and a retry simply polls again (the poll is
stateless). The activity's schedule-to-close timeout is the 72-hour bound.
"""

import re
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from activities.acm import (
        AcmActivities,
        Certificate,
        Certificates,
        CertificatesRequest,
        ListCertificatesRequest,
        RequestCertificateRequest,
        RequestedCertificate,
        WaitIssuedRequest,
        dns_name_problem,
    )
    from activities.elb import (
        ElbActivities,
        HttpsListener,
        ListenersRequest,
        ListenersResult,
        SetCertificateRequest,
    )
    from activities.route53 import HostedZone, RecordRequest, Route53Activities, ZoneRequest

from workflows.base import MUTATE_RETRY, MUTATION_HEARTBEAT, READ_RETRY, failure_message
from workflows.gate import GatedRunbook
from workflows.idempotency import token
from workflows.lock import StalePlan, exclusive, lease_for, stale
from workflows.lock import listener as listener_resource
from workflows.models import MAX_RESOURCE, Finding, Resource, RunbookInput, RunbookResult

# runbook.md, "If Expired": `aws acm request-certificate --domain-name api.prod.revenue-context.com`
DEFAULT_DOMAIN = "api.prod.revenue-context.com"
MAX_VALIDATION_HOURS = 72  # ACM gives up validating a DNS-validated request after 72 hours
# The wait for ISSUED: retried (a lost worker, AWS throttling) until its 72-hour bound.
WAIT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=10),
    maximum_interval=timedelta(minutes=5),
)

LB_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?")
# Stands for the certificate in the plan until it exists.
NEW = "the new certificate"
Verdict = Literal["ok", "expiring", "expired", "ineligible", "not_issued"]


class CertRenewalInput(RunbookInput):
    domain: str = Field(DEFAULT_DOMAIN, max_length=MAX_RESOURCE)
    # Load balancer names; empty: the worker's configured ALB(s) (ALB_NAMES).
    load_balancers: list[Resource] = Field([], max_length=20)
    # Only this listener; None: every HTTPS listener whose certificate covers the domain.
    listener_arn: str | None = Field(None, min_length=1, max_length=MAX_RESOURCE)
    # Renew when the certificate expires within this many days (or is expired, or ACM will
    # not renew it itself).
    days_before_expiry: int = Field(30, ge=1, le=365)
    # Renew even a healthy certificate.
    force: bool = False
    # The longest pause between two reads of the certificate's status while ACM validates.
    poll_seconds: int = Field(30, ge=1, le=900)
    # How long to wait for ACM to issue the certificate (ACM itself stops at 72 hours).
    issue_timeout_hours: float = Field(MAX_VALIDATION_HOURS, gt=0, le=MAX_VALIDATION_HOURS)
    verify_checks: int = Field(3, ge=1, le=30)
    verify_interval_seconds: int = Field(5, ge=1, le=600)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.strip().lower().rstrip(".")
        if problem := dns_name_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("load_balancers")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if name != "*" and not re.fullmatch(
                r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?", name
            ):
                raise ValueError(
                    f"{name!r} is not a load balancer name (1-32 letters, digits and hyphens) nor *"
                )
        return value


class CertPlan(BaseModel):
    action: str  # "renew" | "swap" | "none" | "refuse"
    summary: str
    steps: list[str]
    listeners: list[HttpsListener] = []
    # The certificate the listeners serve now (the one being replaced).
    current: str | None = None
    # An ISSUED certificate already in ACM to swap to (action "swap").
    reuse: Certificate | None = None
    zone: HostedZone | None = None


class CertDiagnosis(BaseModel):
    findings: list[Finding]
    listeners: ListenersResult | None = None
    # The listeners whose certificate covers the domain (or the one asked for).
    targets: list[HttpsListener] = []
    current: list[Certificate] = []
    # Other certificates ACM holds for the domain (ISSUED or being validated).
    others: list[Certificate] = []
    zone: HostedZone | None = None


# ---- judging (pure) ------------------------------------------------------------------------


def verdict(cert: Certificate, now: datetime, days_before_expiry: int) -> tuple[Verdict, str]:
    """Does this certificate need renewing, and why."""
    days = cert.days_left(now)
    until = f"{cert.not_after:%Y-%m-%d}" if cert.not_after else "unknown"
    if cert.status == "EXPIRED" or (days is not None and days <= 0):
        return "expired", f"expired on {until}"
    if cert.status != "ISSUED":
        return "not_issued", f"is {cert.status}"
    left = f"expires in {days:.0f} days ({until})" if days is not None else "expiry unknown"
    if days is not None and days <= days_before_expiry:
        return "expiring", left
    if cert.renewal_eligibility != "ELIGIBLE":
        why = "imported" if cert.type == "IMPORTED" else cert.renewal_eligibility.lower()
        return "ineligible", f"{left}; ACM will not renew it ({why})"
    return "ok", f"{left}; ACM renews it ({cert.type}, {cert.renewal_eligibility})"


def describe_cert(cert: Certificate, now: datetime, days_before_expiry: int) -> str:
    _, why = verdict(cert, now, days_before_expiry)
    return f"{cert.short} {cert.domain} {cert.type} {cert.status}: {why}"


def judge_listeners(result: ListenersResult, domain: str, targets: list[HttpsListener]) -> Finding:
    missing = f"; not found: {', '.join(result.missing)}" if result.missing else ""
    where = ", ".join(result.load_balancers) or "no load balancer"
    serving = ", ".join(t.label for t in targets) or "none"
    return Finding(
        check="https listeners",
        verdict="ok" if targets else "failing",
        summary=f"{len(result.listeners)} HTTPS listeners on {where}; serving {domain}: "
        f"{serving}{missing}",
        data={"serving": [t.label for t in targets]},
    )


def judge_current(certs: list[Certificate], now: datetime, days: int) -> Finding:
    if not certs:
        return Finding(check="certificate", verdict="unavailable", summary="none found")
    verdicts = [verdict(c, now, days)[0] for c in certs]
    worst = (
        "failing"
        if any(v in ("expired", "expiring", "not_issued") for v in verdicts)
        else "degraded"
        if "ineligible" in verdicts
        else "ok"
    )
    return Finding(
        check="certificate",
        verdict=worst,
        summary="; ".join(describe_cert(c, now, days) for c in certs),
        data={"verdicts": verdicts},
    )


def judge_zone(zone: HostedZone) -> Finding:
    return Finding(check="hosted zone", verdict="ok", summary=f"{zone.name} ({zone.id})")


def usable(cert: Certificate, inp: CertRenewalInput, now: datetime, current: set[str]) -> bool:
    """An ISSUED certificate already in ACM that could replace the current one."""
    return (
        cert.arn not in current
        and cert.status == "ISSUED"
        and cert.covers(inp.domain)
        and verdict(cert, now, inp.days_before_expiry)[0] == "ok"
    )


def make_plan(inp: CertRenewalInput, diag: CertDiagnosis, now: datetime) -> CertPlan:
    """Pure: what would be done, and why."""
    if diag.listeners is None:
        return CertPlan(
            action="refuse",
            summary="the load balancers' listeners could not be read: nothing is done blind",
            steps=["Check the load balancers' HTTPS listeners"],
        )
    if not diag.targets:
        where = ", ".join(diag.listeners.load_balancers) or "the configured load balancers"
        asked = (
            f"listener {inp.listener_arn}" if inp.listener_arn else f"no HTTPS listener on {where}"
        )
        return CertPlan(
            action="refuse",
            summary=f"{asked} serves {inp.domain}: no certificate to renew",
            steps=["Name the load balancer (load_balancers) or the listener (listener_arn)"],
        )
    current = {t.certificate_arn for t in diag.targets if t.certificate_arn}
    labels = ", ".join(t.label for t in diag.targets)
    old = diag.current[0].arn if len(diag.current) == 1 else None
    why = "; ".join(describe_cert(c, now, inp.days_before_expiry) for c in diag.current)
    why = why or "certificate unknown"
    healthy = bool(diag.current) and all(
        verdict(c, now, inp.days_before_expiry)[0] == "ok" for c in diag.current
    )
    if healthy and not inp.force:
        return CertPlan(
            action="none",
            summary=f"{inp.domain} on {labels}: {why}: nothing to do",
            steps=[],
            listeners=diag.targets,
        )
    olds = ", ".join(_short(a) for a in sorted(current))

    def swap_steps(new: str) -> list[str]:
        return [
            f"Make {new} the default certificate of {labels} (only where it still serves {olds})",
            f"Verify every listener serves {new} ({inp.verify_checks} reads at most)",
        ]

    reuse = next((c for c in diag.others if usable(c, inp, now, current)), None)
    if reuse is not None:
        return CertPlan(
            action="swap",
            summary=f"{inp.domain} on {labels}: {why}; ACM already holds "
            f"{describe_cert(reuse, now, inp.days_before_expiry)}: swap to it",
            steps=swap_steps(reuse.short),
            listeners=diag.targets,
            current=old,
            reuse=reuse,
        )
    if diag.zone is None:
        return CertPlan(
            action="refuse",
            summary=f"{inp.domain}: no Route 53 hosted zone to publish the validation record "
            "in: a DNS-validated certificate cannot be obtained",
            steps=[f"Create the hosted zone for {inp.domain} or validate by hand"],
        )
    steps = [
        f"Request a certificate for {inp.domain} from ACM (DNS validation, idempotency token)",
        f"UPSERT its validation CNAME in {diag.zone.name} and wait until INSYNC",
        f"Wait until ACM has issued it (at most {inp.issue_timeout_hours:g} h)",
        *swap_steps(NEW),
    ]
    return CertPlan(
        action="renew",
        summary=f"{inp.domain} on {labels}: {why}: renew",
        steps=steps,
        listeners=diag.targets,
        current=old,
        zone=diag.zone,
    )


# ---- the workflow --------------------------------------------------------------------------


@workflow.defn(name="CertificateRenewal")
class CertificateRenewal(GatedRunbook):
    procedure = "cert-renewal"

    @workflow.run
    async def run(self, inp: CertRenewalInput) -> RunbookResult:
        self.begin(inp, inp.domain)
        self.tag(inp.severity)
        diag = await self._diagnose(inp)
        plan = make_plan(inp, diag, workflow.now())
        self.set_phase("plan")
        self.record("plan", "info", plan.summary)
        if plan.action == "refuse":
            await self.notify("failed", f"cert-renewal refused for {inp.domain}", plan.summary, {})
            return self.finish("refused", plan.summary, diag.findings, plan.steps)
        if plan.action == "none":
            return self.finish("completed", plan.summary, diag.findings, plan.steps)
        if inp.dry_run:
            return self.finish("dry_run", f"Dry run: {plan.summary}", diag.findings, plan.steps)
        try:
            new = plan.reuse or await self._obtain(inp, plan)
        except (ActivityError, ApplicationError) as err:
            await self.fail(plan.summary, self._reason(err, inp))
        gate_summary = (
            f"{plan.summary}. New certificate {new.short} is {new.status}, valid until "
            f"{new.not_after:%Y-%m-%d}: make it the listeners' certificate?"
        )
        steps = [s.replace(NEW, new.short) for s in plan.steps]
        decision = await self.gate("swap-certificate", gate_summary, steps)
        if not decision.approved:
            return await self._not_approved(diag.findings, plan, new)
        lease = lease_for(
            60 * len(plan.listeners), inp.verify_checks * (60 + inp.verify_interval_seconds)
        )
        try:
            async with exclusive(
                self,
                [listener_resource(x.arn) for x in plan.listeners],
                lease,
                partial(self._stale, inp, plan),
            ):
                summary = await self._swap(inp, plan, new)
        except StalePlan as err:
            return await stale(self, err, diag.findings, steps)
        except (ActivityError, ApplicationError) as err:
            await self.fail(plan.summary, failure_message(err))
        await self.notify(
            "resolved",
            f"cert-renewal done for {inp.domain}",
            summary,
            {"Certificate": new.arn, "Valid until": f"{new.not_after:%Y-%m-%d}"},
        )
        return self.finish("completed", summary, diag.findings, steps)

    def _read(self, method: Any, arg: Any) -> Any:
        return workflow.execute_activity_method(
            method, arg, start_to_close_timeout=timedelta(seconds=60), retry_policy=READ_RETRY
        )

    async def _diagnose(self, inp: CertRenewalInput) -> CertDiagnosis:
        now = workflow.now()
        results = await self.check_all(
            self.check(
                "https listeners",
                self._read(
                    ElbActivities.https_listeners,
                    ListenersRequest(load_balancers=inp.load_balancers),
                ),
                lambda r: Finding(
                    check="https listeners",
                    verdict="ok",
                    summary=f"{len(r.listeners)} on {', '.join(r.load_balancers) or 'none'}",
                ),
            ),
            self.check(
                "hosted zone",
                self._read(Route53Activities.find_zone, ZoneRequest(domain=inp.domain)),
                judge_zone,
            ),
            self.check(
                "acm certificates",
                self._read(
                    AcmActivities.list_certificates, ListCertificatesRequest(domain=inp.domain)
                ),
                lambda r: Finding(
                    check="acm certificates",
                    verdict="ok",
                    summary=f"{len(r.certificates)} ISSUED or pending for {inp.domain}"
                    + "".join(
                        f"; {describe_cert(c, now, inp.days_before_expiry)}" for c in r.certificates
                    ),
                ),
            ),
        )
        listeners: ListenersResult | None = results[0][1]
        zone: HostedZone | None = results[1][1]
        listed: Certificates | None = results[2][1]
        findings = [results[1][0], results[2][0]]
        diag = CertDiagnosis(findings=findings, listeners=listeners, zone=zone)
        if listeners is None:
            diag.findings.insert(0, results[0][0])
            return diag
        arns = sorted({x.certificate_arn for x in listeners.listeners if x.certificate_arn})
        served: list[Certificate] = []
        if arns:
            finding, described = await self.check(
                "served certificates",
                self._read(AcmActivities.describe_certificates, CertificatesRequest(arns=arns)),
                lambda r: Finding(
                    check="served certificates",
                    verdict="ok",
                    summary=f"{len(r.certificates)} read, {len(r.missing)} missing",
                ),
            )
            served = described.certificates if described else []
            if described is None:
                diag.findings.append(finding)
        by_arn = {c.arn: c for c in served}
        if inp.listener_arn:
            diag.targets = [x for x in listeners.listeners if x.arn == inp.listener_arn]
        else:
            diag.targets = [
                x
                for x in listeners.listeners
                if x.certificate_arn in by_arn and by_arn[x.certificate_arn].covers(inp.domain)
            ]
        target_arns = {x.certificate_arn for x in diag.targets}
        diag.current = [c for c in served if c.arn in target_arns]
        diag.others = [
            c for c in (listed.certificates if listed else []) if c.arn not in target_arns
        ]
        diag.findings.insert(0, judge_listeners(listeners, inp.domain, diag.targets))
        diag.findings.insert(1, judge_current(diag.current, now, inp.days_before_expiry))
        return diag

    async def _obtain(self, inp: CertRenewalInput, plan: CertPlan) -> Certificate:
        """Request the certificate, publish its validation records, wait until ISSUED."""
        self.set_phase("request certificate")
        requested: RequestedCertificate = await self.step(
            "request certificate",
            workflow.execute_activity_method(
                AcmActivities.request_certificate,
                RequestCertificateRequest(
                    domain=inp.domain, idempotency_token=token("request-certificate")
                ),
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=MUTATION_HEARTBEAT,
                retry_policy=MUTATE_RETRY,
            ),
            lambda r: r.detail,
        )
        cert = requested.certificate
        for record in cert.validation:
            if not (record.name and record.value):
                continue
            await self.step(
                f"publish validation record for {record.domain}",
                workflow.execute_activity_method(
                    Route53Activities.upsert_record,
                    RecordRequest(name=record.name, type="CNAME", value=record.value),
                    start_to_close_timeout=timedelta(minutes=10),
                    heartbeat_timeout=MUTATION_HEARTBEAT,
                    retry_policy=MUTATE_RETRY,
                ),
                lambda r: r.detail,
            )
        if cert.status == "ISSUED":
            return cert
        self.set_phase("awaiting certificate")
        wait = timedelta(hours=inp.issue_timeout_hours)
        issued: Certificate = await self.step(
            f"wait for {cert.short} ISSUED",
            workflow.execute_activity_method(
                AcmActivities.wait_issued,
                WaitIssuedRequest(arn=cert.arn, poll_seconds=inp.poll_seconds),
                schedule_to_close_timeout=wait,
                start_to_close_timeout=wait,
                heartbeat_timeout=timedelta(seconds=2 * inp.poll_seconds + 60),
                retry_policy=WAIT_RETRY,
            ),
            lambda c: f"{c.short} ISSUED, valid until {c.not_after:%Y-%m-%d}",
        )
        return issued

    async def _stale(self, inp: CertRenewalInput, plan: CertPlan) -> str | None:
        """Once the locks are held: does every listener still serve what the plan swaps out?"""
        result: ListenersResult = await self.step(
            "re-read listeners",
            self._read(
                ElbActivities.https_listeners, ListenersRequest(load_balancers=inp.load_balancers)
            ),
            lambda r: f"{len(r.listeners)} HTTPS listeners",
        )
        serving = {x.arn: x.certificate_arn for x in result.listeners}
        changed = [
            f"{x.label} now serves {_short(serving.get(x.arn))}, not {_short(x.certificate_arn)}"
            for x in plan.listeners
            if serving.get(x.arn) != x.certificate_arn
        ]
        if not changed:
            return None
        return "; ".join(changed) + ": another change came first"

    async def _swap(self, inp: CertRenewalInput, plan: CertPlan, new: Certificate) -> str:
        self.set_phase("act")
        for listener in plan.listeners:
            await self.step(
                f"set certificate of {listener.label}",
                workflow.execute_activity_method(
                    ElbActivities.set_listener_certificate,
                    SetCertificateRequest(
                        listener_arn=listener.arn,
                        certificate_arn=new.arn,
                        expected_current=listener.certificate_arn,
                        authority=self.authority(),
                    ),
                    start_to_close_timeout=timedelta(seconds=60),
                    heartbeat_timeout=MUTATION_HEARTBEAT,
                    retry_policy=MUTATE_RETRY,
                ),
                lambda r: r.reason,
            )
        self.set_phase("verify")
        labels = await self._verify(inp, plan, new)
        return (
            f"{labels} now serve{'s' if len(plan.listeners) == 1 else ''} {new.short} for "
            f"{inp.domain}, valid until {new.not_after:%Y-%m-%d} (was {_short(plan.current)})"
        )

    async def _verify(self, inp: CertRenewalInput, plan: CertPlan, new: Certificate) -> str:
        """Read the listeners until each one serves the new certificate."""
        wanted = {x.arn for x in plan.listeners}
        serving: dict[str, str | None] = {}
        for check in range(1, inp.verify_checks + 1):
            result: ListenersResult = await self._read(
                ElbActivities.https_listeners, ListenersRequest(load_balancers=inp.load_balancers)
            )
            serving = {x.arn: x.certificate_arn for x in result.listeners if x.arn in wanted}
            if len(serving) == len(wanted) and set(serving.values()) == {new.arn}:
                labels = ", ".join(x.label for x in plan.listeners)
                verb = "serves" if len(wanted) == 1 else "serve"
                self.record("listeners verified", "ok", f"{labels} {verb} {new.short}")
                return labels
            if check < inp.verify_checks:
                await workflow.sleep(inp.verify_interval_seconds)
        wrong = [
            f"{x.label} serves {_short(serving.get(x.arn))}"
            for x in plan.listeners
            if serving.get(x.arn) != new.arn
        ]
        raise ApplicationError(
            f"after {inp.verify_checks} reads: {'; '.join(wrong)}, not {new.short}",
            type="ListenerNotUpdated",
            non_retryable=True,
        )

    def _reason(self, err: BaseException, inp: CertRenewalInput) -> str:
        """A wait that ran out of its bound says so, with the last thing it saw."""
        if isinstance(err, ActivityError) and (
            err.retry_state == RetryState.TIMEOUT or isinstance(err.cause, ActivityTimeout)
        ):
            last = "" if isinstance(err.cause, ActivityTimeout) else f" ({failure_message(err)})"
            return (
                f"ACM did not issue the certificate within {inp.issue_timeout_hours:g} h{last}: "
                "is the validation CNAME resolvable from the internet?"
            )
        return failure_message(err)

    async def _not_approved(
        self, findings: list[Finding], plan: CertPlan, new: Certificate
    ) -> RunbookResult:
        unchanged = (
            f"the listeners were not changed. Certificate {new.short} ({new.status}) stays "
            "in ACM unused: a later run offers it again"
        )
        return await self.not_approved(findings, plan.steps, unchanged)


def _short(arn: str | None) -> str:
    return (arn or "none").rsplit("/", 1)[-1][:8]
