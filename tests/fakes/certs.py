"""Fake ACM, ELBv2 and Route 53 activities for the cert-renewal and expiry-check workflow
tests: same names and models as the real ones, which have their own tests against the
sandbox's moto (tests/activities/test_acm_elb_route53.py)."""

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.acm import (
    Certificate,
    Certificates,
    CertificatesRequest,
    ListCertificatesRequest,
    RequestCertificateRequest,
    RequestedCertificate,
    ValidationRecord,
    WaitIssuedRequest,
)
from activities.elb import (
    HttpsListener,
    ListenersRequest,
    ListenersResult,
    SetCertificateRequest,
    SetCertificateResult,
)
from activities.route53 import HostedZone, RecordChange, RecordRequest, ZoneRequest
from tests.fakes.systems import FakeSystems

DOMAIN = "api.prod.revenue-context.com"
ALB = "prod-revenue-context-alb"
ACM = "arn:aws:acm:us-east-1:123456789012:certificate/"
RECORD = ValidationRecord(
    domain=DOMAIN,
    status="PENDING_VALIDATION",
    name=f"_d930b28be6c5927595552b219965053e.{DOMAIN}.",
    type="CNAME",
    value="_c9edd76ee4a0e2a74388032f3861cc50.ykybfrwcxw.acm-validations.aws.",
)


def cert(
    arn_id: str,
    days_left: float,
    *,
    domain: str = DOMAIN,
    kind: str = "AMAZON_ISSUED",
    status: str = "ISSUED",
    eligibility: str | None = None,
    now: datetime | None = None,
) -> Certificate:
    """`now`: the time the workflow sees (a time-skipping server's clock runs ahead)."""
    now = now or datetime.now(UTC)
    eligible = kind == "AMAZON_ISSUED" and status == "ISSUED"
    return Certificate(
        arn=ACM + arn_id,
        domain=domain,
        status=status,
        type=kind,
        renewal_eligibility=eligibility or ("ELIGIBLE" if eligible else "INELIGIBLE"),
        not_before=now - timedelta(days=365 - days_left),
        not_after=now + timedelta(days=days_left),
    )


def listener(name: str, port: int, certificate_arn: str, alb: str = ALB) -> HttpsListener:
    return HttpsListener(
        arn=f"arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/{alb}/1/{name}",
        load_balancer=alb,
        load_balancer_arn=f"arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/{alb}/1",
        port=port,
        protocol="HTTPS",
        certificate_arn=certificate_arn,
    )


@dataclass
class FakeCerts:
    """One ALB listener serving an imported certificate 20 days from expiry, by default."""

    gate: FakeSystems | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    certificates: list[Certificate] = field(default_factory=list)
    listeners: list[HttpsListener] = field(
        default_factory=lambda: [listener("https", 443, ACM + "imported-0001")]
    )
    zone: HostedZone | None = field(
        default_factory=lambda: HostedZone(id="Z0SANDBOX", name="revenue-context.com.")
    )
    # When set, the wait for ISSUED holds (counting its polls) until the test sets it.
    issued: asyncio.Event | None = None
    pending_polls: int = 0
    # ACM's final status when it will never issue (the wait fails with it).
    never_issued: str | None = None
    # Every attempt of the wait fails (a retryable error): the run's bound must end it.
    wait_fails: bool = False
    # The listener ignores the change (verify must notice).
    stuck: bool = False
    calls: list[str] = field(default_factory=list)
    requests: list[RequestCertificateRequest] = field(default_factory=list)
    records: list[RecordRequest] = field(default_factory=list)
    swaps: list[SetCertificateRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.certificates = self.certificates or [
            cert("imported-0001", 20, kind="IMPORTED", now=self.now)
        ]

    def by_arn(self, arn: str) -> Certificate | None:
        return next((c for c in self.certificates if c.arn == arn), None)

    def activities(self) -> list[Any]:
        @activity.defn(name="elb.https_listeners")
        async def https_listeners(req: ListenersRequest) -> ListenersResult:
            self.calls.append("https_listeners")
            names = sorted({x.load_balancer for x in self.listeners}) or [ALB]
            return ListenersResult(load_balancers=names, listeners=list(self.listeners))

        @activity.defn(name="acm.describe_certificates")
        async def describe(req: CertificatesRequest) -> Certificates:
            self.calls.append("describe_certificates")
            found = [c for arn in req.arns if (c := self.by_arn(arn))]
            missing = [arn for arn in req.arns if not self.by_arn(arn)]
            return Certificates(certificates=found, missing=missing)

        @activity.defn(name="acm.list_certificates")
        async def list_certificates(req: ListCertificatesRequest) -> Certificates:
            self.calls.append("list_certificates")
            found = [c for c in self.certificates if req.domain is None or c.covers(req.domain)]
            return Certificates(certificates=found)

        @activity.defn(name="route53.find_zone")
        async def find_zone(req: ZoneRequest) -> HostedZone:
            self.calls.append("find_zone")
            if self.zone is None:
                raise ApplicationError(
                    f"domain: no public Route 53 hosted zone holds {req.domain}.",
                    type="HostedZoneNotFound",
                    non_retryable=True,
                )
            return self.zone

        @activity.defn(name="acm.request_certificate")
        async def request(req: RequestCertificateRequest) -> RequestedCertificate:
            self.calls.append("request_certificate")
            self.requests.append(req)
            new = cert(
                "renewed2-0002",
                395,
                domain=req.domain,
                status="PENDING_VALIDATION",
                now=self.now,
            )
            new.validation = [RECORD]
            if not self.by_arn(new.arn):
                self.certificates.append(new)
            return RequestedCertificate(
                certificate=new, requested=True, detail=f"requested {new.short}"
            )

        @activity.defn(name="route53.upsert_record")
        async def upsert(req: RecordRequest) -> RecordChange:
            self.calls.append("upsert_record")
            self.records.append(req)
            assert self.zone is not None
            return RecordChange(
                zone=self.zone,
                name=req.name,
                type=req.type,
                value=req.value,
                changed=True,
                change_id="C1",
                status="INSYNC",
                detail=f"UPSERT {req.type} {req.name}: INSYNC",
            )

        @activity.defn(name="acm.wait_issued")
        async def wait_issued(req: WaitIssuedRequest) -> Certificate:
            self.calls.append("wait_issued")
            if self.wait_fails:
                raise ApplicationError("ThrottlingException: Rate exceeded")
            if self.issued is not None:
                while not self.issued.is_set():
                    self.pending_polls += 1
                    activity.heartbeat({"status": "PENDING_VALIDATION"})
                    await asyncio.sleep(0.05)
            found = self.by_arn(req.arn)
            assert found is not None
            if self.never_issued:
                raise ApplicationError(
                    f"certificate {found.short} for {found.domain} is {self.never_issued}; "
                    "ACM will not issue it",
                    type="CertificateNotIssued",
                    non_retryable=True,
                )
            found.status, found.renewal_eligibility = "ISSUED", "ELIGIBLE"
            return found

        @activity.defn(name="elb.set_listener_certificate")
        async def set_certificate(req: SetCertificateRequest) -> SetCertificateResult:
            self.calls.append("set_listener_certificate")
            self.swaps.append(req)
            index = next(i for i, x in enumerate(self.listeners) if x.arn == req.listener_arn)
            previous = self.listeners[index].certificate_arn
            if not self.stuck:
                self.listeners[index] = self.listeners[index].model_copy(
                    update={"certificate_arn": req.certificate_arn}
                )
            return SetCertificateResult(
                listener_arn=req.listener_arn,
                previous=previous,
                certificate_arn=req.certificate_arn,
                changed=previous != req.certificate_arn,
                reason="changed",
            )

        fakes = [
            https_listeners,
            describe,
            list_certificates,
            find_zone,
            request,
            upsert,
            wait_issued,
            set_certificate,
        ]
        return fakes + (self.gate.gate_activities() if self.gate else [])
