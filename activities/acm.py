"""ACM: certificates with their expiry, status and renewal eligibility; request one with DNS
validation, once; wait until ACM has issued it.

A request is idempotent twice over: ACM's `IdempotencyToken` (derived by the workflow from its
id, run and step) makes a retry within the hour return the same certificate, and the token is
also kept as a tag, so a retry later than that (ACM forgets tokens after an hour) finds the
certificate it already asked for instead of requesting a second one.
"""

import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, field_validator
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from activities.aws_access import AwsAccess
from activities.keepalive import heartbeating

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

# The tag that remembers which workflow step requested a certificate.
REQUEST_TAG = "runbook-request"
# Statuses from which ACM will never issue the certificate.
NEVER_ISSUED = frozenset({"FAILED", "VALIDATION_TIMED_OUT", "REVOKED", "EXPIRED", "INACTIVE"})
LIVE = ("PENDING_VALIDATION", "ISSUED")
DNS_NAME = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$"
)


def dns_name_problem(name: str) -> str | None:
    """Why `name` is not a domain ACM can certify, or None."""
    if len(name) > 253 or not DNS_NAME.match(name):
        return (
            f"{name!r} is not a DNS name: lowercase labels of letters, digits and hyphens "
            "separated by dots, e.g. api.prod.revenue-context.com (a leading *. for a wildcard)"
        )
    return None


def covers(pattern: str, domain: str) -> bool:
    """Does a certificate name (maybe a wildcard) cover the domain?"""
    pattern, domain = pattern.lower().rstrip("."), domain.lower().rstrip(".")
    if pattern == domain:
        return True
    if pattern.startswith("*."):
        head, _, rest = domain.partition(".")
        return bool(head) and head != "*" and rest == pattern[2:]
    return False


class ValidationRecord(BaseModel):
    """The DNS record ACM checks for one domain of the certificate."""

    domain: str
    status: str | None = None
    name: str | None = None
    type: str | None = None
    value: str | None = None


class Certificate(BaseModel):
    arn: str
    domain: str
    sans: list[str] = []
    status: str
    type: str  # IMPORTED | AMAZON_ISSUED | PRIVATE
    renewal_eligibility: str = "INELIGIBLE"
    not_before: datetime | None = None
    not_after: datetime | None = None
    in_use_by: list[str] = []
    failure_reason: str | None = None
    validation: list[ValidationRecord] = []

    @property
    def short(self) -> str:
        return self.arn.rsplit("/", 1)[-1][:8]

    def days_left(self, now: datetime) -> float | None:
        if self.not_after is None:
            return None
        return (self.not_after - now).total_seconds() / 86400

    def covers(self, domain: str) -> bool:
        return any(covers(name, domain) for name in [self.domain, *self.sans])


class CertificatesRequest(BaseModel):
    arns: list[str] = Field(min_length=1)


class Certificates(BaseModel):
    certificates: list[Certificate]
    # Asked for but not found.
    missing: list[str] = []


class ListCertificatesRequest(BaseModel):
    # Only certificates covering this domain; None: all.
    domain: str | None = None
    statuses: list[str] = list(LIVE)


class RequestCertificateRequest(BaseModel):
    domain: str
    subject_alternative_names: list[str] = []
    # ACM takes at most 32 characters of \w.
    idempotency_token: str = Field(min_length=1, max_length=32, pattern=r"^\w+$")

    @field_validator("domain")
    @classmethod
    def _dns(cls, value: str) -> str:
        if problem := dns_name_problem(value):
            raise ValueError(problem)
        return value


class RequestedCertificate(BaseModel):
    certificate: Certificate
    # False: the certificate this step asked for before (same token) was found.
    requested: bool
    detail: str


class WaitIssuedRequest(BaseModel):
    arn: str
    # Polls start at `first_poll_seconds` and double up to `poll_seconds`.
    poll_seconds: float = Field(30.0, gt=0, le=900)
    first_poll_seconds: float = Field(2.0, gt=0, le=900)


def _certificate(raw: dict[str, Any]) -> Certificate:
    return Certificate(
        arn=raw["CertificateArn"],
        domain=raw.get("DomainName", ""),
        sans=[s for s in raw.get("SubjectAlternativeNames", []) if s != raw.get("DomainName")],
        status=raw.get("Status", "UNKNOWN"),
        type=raw.get("Type", "UNKNOWN"),
        renewal_eligibility=raw.get("RenewalEligibility", "INELIGIBLE"),
        not_before=_utc(raw.get("NotBefore")),
        not_after=_utc(raw.get("NotAfter")),
        in_use_by=list(raw.get("InUseBy", [])),
        failure_reason=raw.get("FailureReason"),
        validation=[
            ValidationRecord(
                domain=option.get("DomainName", ""),
                status=option.get("ValidationStatus"),
                name=(option.get("ResourceRecord") or {}).get("Name"),
                type=(option.get("ResourceRecord") or {}).get("Type"),
                value=(option.get("ResourceRecord") or {}).get("Value"),
            )
            for option in raw.get("DomainValidationOptions", [])
            if option.get("ValidationMethod", "DNS") == "DNS"
        ],
    )


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _not_found(err: "ClientError") -> bool:
    return err.response["Error"]["Code"] == "ResourceNotFoundException"


class AcmActivities:
    def __init__(self, aws: AwsAccess) -> None:
        self._aws = aws
        self._acm = aws.client("acm")

    def _describe(self, arn: str) -> Certificate:
        try:
            raw = self._acm.describe_certificate(CertificateArn=arn)["Certificate"]
        except self._acm.exceptions.ClientError as err:
            if _not_found(err):
                raise ApplicationError(
                    f"no certificate {arn}", type="CertificateNotFound", non_retryable=True
                ) from None
            raise
        return _certificate(raw)

    def _arns(self, statuses: list[str]) -> list[tuple[str, str]]:
        """(ARN, domain) of every certificate in these statuses."""
        found = []
        paginator = self._acm.get_paginator("list_certificates")
        for page in paginator.paginate(CertificateStatuses=statuses):
            for summary in page.get("CertificateSummaryList", []):
                found.append((summary["CertificateArn"], summary.get("DomainName", "")))
        return found

    @activity.defn(name="acm.describe_certificates")
    def describe_certificates(self, req: CertificatesRequest) -> Certificates:
        certificates, missing = [], []
        for arn in dict.fromkeys(req.arns):
            try:
                certificates.append(self._describe(arn))
            except ApplicationError:
                missing.append(arn)
        return Certificates(certificates=certificates, missing=missing)

    @activity.defn(name="acm.list_certificates")
    def list_certificates(self, req: ListCertificatesRequest) -> Certificates:
        """Certificates in the given statuses (covering the domain, when one is given)."""
        found = []
        for arn, _ in self._arns(req.statuses):
            try:
                cert = self._describe(arn)
            except ApplicationError:  # deleted meanwhile
                continue
            if req.domain is None or cert.covers(req.domain):
                found.append(cert)
        return Certificates(certificates=found)

    def _requested_by(self, token: str, domain: str) -> str | None:
        """The certificate an earlier attempt of this step requested, if any."""
        for arn, name in self._arns(list(LIVE)):
            if name != domain:
                continue
            tags = self._acm.list_tags_for_certificate(CertificateArn=arn).get("Tags", [])
            if any(t.get("Key") == REQUEST_TAG and t.get("Value") == token for t in tags):
                return arn
        return None

    @activity.defn(name="acm.request_certificate", no_thread_cancel_exception=True)
    @heartbeating
    def request_certificate(self, req: RequestCertificateRequest) -> RequestedCertificate:
        """Request a certificate with DNS validation, once per token; return it with its
        validation records (ACM adds them a few seconds after the request)."""
        arn = self._requested_by(req.idempotency_token, req.domain)
        requested = arn is None
        if arn is None:
            extra = {}
            if req.subject_alternative_names:
                extra["SubjectAlternativeNames"] = [req.domain, *req.subject_alternative_names]
            arn = self._aws.mutating("acm").request_certificate(
                DomainName=req.domain,
                ValidationMethod="DNS",
                IdempotencyToken=req.idempotency_token,
                Tags=[{"Key": REQUEST_TAG, "Value": req.idempotency_token}],
                **extra,
            )["CertificateArn"]
        cert = self._with_records(arn)
        verb = "requested" if requested else "already requested by this step:"
        return RequestedCertificate(
            certificate=cert,
            requested=requested,
            detail=f"{verb} {cert.short} for {req.domain} ({cert.status}, DNS validation)",
        )

    def _with_records(self, arn: str) -> Certificate:
        polls = 0
        while True:
            cert = self._describe(arn)
            if cert.status != "PENDING_VALIDATION" or (
                cert.validation and all(v.name and v.value for v in cert.validation)
            ):
                return cert
            polls += 1
            activity.heartbeat({"waiting_for": "validation records", "polls": polls})
            activity.wait_for_cancelled_sync(min(2.0, 0.2 * polls))
            if activity.is_cancelled():
                raise CancelledError("cancelled while ACM prepared the validation records")

    @activity.defn(name="acm.wait_issued")
    def wait_issued(self, req: WaitIssuedRequest) -> Certificate:
        """Poll until ACM has issued the certificate, heartbeating every poll. ACM keeps
        trying to validate for up to 72 hours; the workflow bounds the wait with the
        activity's schedule-to-close timeout. A status from which ACM never issues is a
        non-retryable error with ACM's reason."""
        started = time.monotonic()
        interval = min(req.first_poll_seconds, req.poll_seconds)
        polls = 0
        while True:
            cert = self._describe(req.arn)
            polls += 1
            if cert.status == "ISSUED":
                return cert
            if cert.status in NEVER_ISSUED:
                raise ApplicationError(
                    f"certificate {cert.short} for {cert.domain} is {cert.status}"
                    + (f": {cert.failure_reason}" if cert.failure_reason else "")
                    + "; ACM will not issue it",
                    type="CertificateNotIssued",
                    non_retryable=True,
                )
            activity.heartbeat(
                {
                    "status": cert.status,
                    "polls": polls,
                    "waited_seconds": round(time.monotonic() - started),
                }
            )
            activity.wait_for_cancelled_sync(interval)
            if activity.is_cancelled():
                raise CancelledError(f"wait cancelled while {cert.short} is {cert.status}")
            interval = min(interval * 2, req.poll_seconds)
