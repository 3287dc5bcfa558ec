"""cert-renewal: the certificate the ALB serves nears its expiry (also what the daily
expiry check reads).

Seeded in moto: the ALB `prod-revenue-context-alb` with an HTTPS listener on 443 whose
certificate for `api.prod.revenue-context.com` is an imported, self-signed one that expires
in 20 days (ACM never renews an imported certificate: a realistic reason to renew), and the
public hosted zone `revenue-context.com.`.

moto issues a requested certificate 60 s after the request whatever DNS says
(`MOTO_ACM_VALIDATION_WAIT`). Here, in this process only, a requested certificate stays
PENDING_VALIDATION until its validation CNAME is in the hosted zone and is ISSUED
`issue_delay` seconds after that, as ACM does once it can resolve the record; an issued
Amazon certificate is ELIGIBLE for renewal (moto reports every certificate INELIGIBLE).
`/health/detailed` reports the certificate the listener serves, so a renewal visibly
changes what the service reports.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto import settings as moto_settings
from moto.acm.models import CertBundle
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.route53.models import route53_backends

from sandbox.replies import BadRequest, number

NAME = "cert-renewal"
DOMAIN = "api.prod.revenue-context.com"
ZONE = "revenue-context.com."
ALB = "prod-revenue-context-alb"
SEED_DAYS_LEFT = 20.0
ISSUE_DELAY = 2.0
NEVER = 10**9  # seconds: moto's own timer must never issue a certificate

ClientFactory = Callable[[str], Any]


def self_signed(domain: str, days_left: float) -> tuple[bytes, bytes]:
    """A certificate (PEM) and its key, valid since 345 days and for `days_left` more."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Revenue Context (sandbox)"),
            x509.NameAttribute(NameOID.COMMON_NAME, domain),
        ]
    )
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=345))
        .not_valid_after(now + timedelta(days=days_left))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


class IssuePatch:
    """Replaces CertBundle.check / describe (moto's ACM model) in this process."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.issue_delay = ISSUE_DELAY
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}  # certificate ARN -> when its records were found
        self._originals: tuple[Any, Any, int] | None = None

    def install(self) -> None:
        check, describe = CertBundle.check, CertBundle.describe
        self._originals = (check, describe, moto_settings.ACM_VALIDATION_WAIT)
        moto_settings.ACM_VALIDATION_WAIT = NEVER
        patch = self

        def patched_check(bundle: CertBundle) -> None:
            check(bundle)
            if bundle.type == "AMAZON_ISSUED" and bundle.status == "PENDING_VALIDATION":
                records = describe(bundle)["Certificate"].get("DomainValidationOptions", [])
                if patch.published(bundle.arn, [r["ResourceRecord"] for r in records]):
                    bundle.status = "ISSUED"

        def patched_describe(bundle: CertBundle) -> dict[str, Any]:
            result: dict[str, Any] = describe(bundle)
            cert = result["Certificate"]
            if bundle.type == "AMAZON_ISSUED" and bundle.status == "ISSUED":
                cert["RenewalEligibility"] = "ELIGIBLE"
            return result

        CertBundle.check = patched_check  # type: ignore[method-assign,assignment]
        CertBundle.describe = patched_describe  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        if self._originals is not None:
            check, describe, wait = self._originals
            CertBundle.check = check  # type: ignore[method-assign]
            CertBundle.describe = describe  # type: ignore[method-assign]
            moto_settings.ACM_VALIDATION_WAIT = wait
            self._originals = None

    def reset(self) -> None:
        with self._lock:
            self._seen.clear()
            self.issue_delay = ISSUE_DELAY

    def published(self, arn: str, records: list[dict[str, str]]) -> bool:
        """Every validation record is in a hosted zone, for `issue_delay` seconds."""
        if not records or not all(_in_zone(r) for r in records):
            return False
        with self._lock:
            seen = self._seen.setdefault(arn, time.monotonic())
            return time.monotonic() - seen >= self.issue_delay


def _in_zone(record: dict[str, str]) -> bool:
    name, value = record["Name"].lower().rstrip("."), record["Value"].rstrip(".")
    backend = route53_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for zone in list(backend.zones.values()):
        for rrset in zone.rrsets:
            if rrset.type == record["Type"] and rrset.name.lower().rstrip(".") == name:
                return any(str(v).rstrip(".") == value for v in rrset.records)
    return False


class CertRenewal:
    def __init__(self, region: str) -> None:
        self.patch = IssuePatch(region)
        self._clients: ClientFactory | None = None
        self.load_balancer_arn: str | None = None
        self.listener_arn: str | None = None
        self.seed_arn: str | None = None
        self.zone_id: str | None = None
        self._target_group: str | None = None

    def _client(self, service: str) -> Any:
        assert self._clients is not None
        return self._clients(service)

    # ---- life cycle ---------------------------------------------------------------------

    def start(self, clients: ClientFactory) -> None:
        self._clients = clients
        self.patch.install()
        self._seed_alb()
        self.reset()

    def stop(self) -> None:
        self.patch.uninstall()

    def reset(self) -> None:
        """The listener back on an imported certificate 20 days from expiry; certificates
        requested since and their validation records removed."""
        if self._clients is None:
            return
        self.patch.reset()
        acm = self._client("acm")
        for page in acm.get_paginator("list_certificates").paginate():
            for summary in page["CertificateSummaryList"]:
                if summary["CertificateArn"] != self.seed_arn:
                    with contextlib.suppress(acm.exceptions.ResourceNotFoundException):
                        acm.delete_certificate(CertificateArn=summary["CertificateArn"])
        self._drop_validation_records()
        self.serve_expiring(SEED_DAYS_LEFT)

    def inject(self, body: Any) -> None:
        """The listener serves an imported certificate expiring in `days_left` (default 20)."""
        days = number(body, "days_left")
        if days is not None and not 0.01 <= days <= 825:
            raise BadRequest("days_left must be between 0.01 and 825")
        self.serve_expiring(days or SEED_DAYS_LEFT)

    def serve_expiring(self, days_left: float) -> None:
        """(Re)import the seed certificate, expiring in `days_left`, and serve it."""
        pem, key = self_signed(DOMAIN, days_left)
        acm = self._client("acm")
        extra = {"CertificateArn": self.seed_arn} if self.seed_arn else {}
        self.seed_arn = acm.import_certificate(Certificate=pem, PrivateKey=key, **extra)[
            "CertificateArn"
        ]
        elb = self._client("elbv2")
        if self.listener_arn is None:
            self.listener_arn = self._create_listeners(self.seed_arn)
        else:
            elb.modify_listener(
                ListenerArn=self.listener_arn, Certificates=[{"CertificateArn": self.seed_arn}]
            )

    # ---- seeding ------------------------------------------------------------------------

    def _seed_alb(self) -> None:
        ec2 = self._client("ec2")
        vpc = next(v for v in ec2.describe_vpcs()["Vpcs"] if v.get("IsDefault"))
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])
        elb = self._client("elbv2")
        lb = elb.create_load_balancer(
            Name=ALB,
            Subnets=[s["SubnetId"] for s in subnets["Subnets"][:2]],
            Scheme="internet-facing",
            Type="application",
        )["LoadBalancers"][0]
        self.load_balancer_arn = lb["LoadBalancerArn"]
        self._target_group = elb.create_target_group(
            Name="prod-revenue-context-api",
            Protocol="HTTP",
            Port=8000,
            VpcId=vpc["VpcId"],
            TargetType="ip",
        )["TargetGroups"][0]["TargetGroupArn"]
        route53 = self._client("route53")
        zone = route53.create_hosted_zone(Name=ZONE, CallerReference=f"sandbox-{time.time()}")
        self.zone_id = zone["HostedZone"]["Id"].rsplit("/", 1)[-1]
        route53.change_resource_record_sets(
            HostedZoneId=self.zone_id,
            ChangeBatch={
                "Changes": [
                    {
                        "Action": "UPSERT",
                        "ResourceRecordSet": {
                            "Name": f"{DOMAIN}.",
                            "Type": "CNAME",
                            "TTL": 60,
                            "ResourceRecords": [{"Value": lb["DNSName"]}],
                        },
                    }
                ]
            },
        )

    def _create_listeners(self, certificate_arn: str) -> str:
        elb = self._client("elbv2")
        forward = [{"Type": "forward", "TargetGroupArn": self._target_group}]
        https = elb.create_listener(
            LoadBalancerArn=self.load_balancer_arn,
            Protocol="HTTPS",
            Port=443,
            Certificates=[{"CertificateArn": certificate_arn}],
            SslPolicy="ELBSecurityPolicy-TLS13-1-2-2021-06",
            DefaultActions=forward,
        )["Listeners"][0]
        redirect = {
            "Type": "redirect",
            "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"},
        }
        elb.create_listener(
            LoadBalancerArn=self.load_balancer_arn,
            Protocol="HTTP",
            Port=80,
            DefaultActions=[redirect],
        )
        return str(https["ListenerArn"])

    def _drop_validation_records(self) -> None:
        route53 = self._client("route53")
        records = route53.list_resource_record_sets(HostedZoneId=self.zone_id)
        changes = [
            {"Action": "DELETE", "ResourceRecordSet": r}
            for r in records["ResourceRecordSets"]
            if r["Type"] == "CNAME" and r["Name"].startswith("_")
        ]
        if changes:
            route53.change_resource_record_sets(
                HostedZoneId=self.zone_id, ChangeBatch={"Changes": changes}
            )

    # ---- what the service reports -------------------------------------------------------

    def served(self) -> dict[str, Any] | None:
        """The certificate the HTTPS listener serves (for `/health/detailed`)."""
        if self._clients is None or self.listener_arn is None:
            return None
        try:
            listener = self._client("elbv2").describe_listeners(ListenerArns=[self.listener_arn])
            arn = listener["Listeners"][0]["Certificates"][0]["CertificateArn"]
            cert = self._client("acm").describe_certificate(CertificateArn=arn)["Certificate"]
        except Exception as exc:  # the service would still answer; say what is unknown
            return {"listener": f"{ALB}:443", "error": str(exc)}
        not_after = cert["NotAfter"].astimezone(UTC)
        return {
            "listener": f"{ALB}:443",
            "certificate_arn": arn,
            "domain": cert["DomainName"],
            "type": cert["Type"],
            "status": cert["Status"],
            "renewal_eligibility": cert["RenewalEligibility"],
            "not_after": not_after.isoformat(),
            "days_left": round((not_after - datetime.now(UTC)).total_seconds() / 86400, 2),
        }
