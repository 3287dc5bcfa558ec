"""ELBv2: the HTTPS listeners of the load balancers and their certificates; point a
listener's default certificate at another one, once.

The load balancers default to the worker's configuration (`ALB_NAMES`, comma-separated, `*`
for every load balancer of the region), so a workflow started with `{}` reads the runbook's
ALB; the result names the load balancers that were read.
"""

from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.approvals import Authority
from activities.aws_access import AwsAccess
from activities.keepalive import heartbeating

SECURE = ("HTTPS", "TLS")


class ListenersRequest(BaseModel):
    # Names; empty: the configured ones.
    load_balancers: list[str] = []


class HttpsListener(BaseModel):
    arn: str
    load_balancer: str
    load_balancer_arn: str
    port: int
    protocol: str
    # The default certificate (what a client without SNI, or without a better match, gets).
    certificate_arn: str | None = None
    ssl_policy: str | None = None

    @property
    def label(self) -> str:
        return f"{self.load_balancer}:{self.port}"


class ListenersResult(BaseModel):
    load_balancers: list[str]
    listeners: list[HttpsListener]
    # Asked for but not found.
    missing: list[str] = []


class SetCertificateRequest(BaseModel):
    listener_arn: str = Field(min_length=1)
    certificate_arn: str = Field(min_length=1)
    # The certificate the plan saw on the listener: if the listener now serves another one
    # (a person changed it meanwhile), nothing is changed.
    expected_current: str | None = None
    # The approvals this change acts on; the worker checks them against the run that
    # scheduled it (activities/decision_guard.py) before the activity runs.
    authority: Authority | None = None


class SetCertificateResult(BaseModel):
    listener_arn: str
    previous: str | None
    certificate_arn: str
    changed: bool
    reason: str


def _short(arn: str | None) -> str:
    return (arn or "none").rsplit("/", 1)[-1][:8]


class ElbActivities:
    def __init__(self, aws: AwsAccess, default_load_balancers: list[str]) -> None:
        self._aws = aws
        self._elb = aws.client("elbv2")
        self._defaults = default_load_balancers

    def _load_balancers(self, names: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        if names == ["*"]:
            pages = self._elb.get_paginator("describe_load_balancers").paginate()
            return [lb for page in pages for lb in page["LoadBalancers"]], []
        found, missing = [], []
        for name in names:  # one at a time: a missing name fails the whole call
            try:
                found += self._elb.describe_load_balancers(Names=[name])["LoadBalancers"]
            except self._elb.exceptions.ClientError as err:
                if err.response["Error"]["Code"] != "LoadBalancerNotFound":
                    raise
                missing.append(name)
        return found, missing

    @activity.defn(name="elb.https_listeners")
    def https_listeners(self, req: ListenersRequest) -> ListenersResult:
        names = req.load_balancers or self._defaults
        balancers, missing = self._load_balancers(names)
        listeners = []
        for lb in balancers:
            pages = self._elb.get_paginator("describe_listeners").paginate(
                LoadBalancerArn=lb["LoadBalancerArn"]
            )
            for page in pages:
                for raw in page["Listeners"]:
                    if raw.get("Protocol") in SECURE:
                        listeners.append(_listener(raw, lb["LoadBalancerName"]))
        return ListenersResult(
            load_balancers=[lb["LoadBalancerName"] for lb in balancers],
            listeners=sorted(listeners, key=lambda item: (item.load_balancer, item.port)),
            missing=missing,
        )

    def _describe_listener(self, arn: str) -> dict[str, Any]:
        try:
            return dict(self._elb.describe_listeners(ListenerArns=[arn])["Listeners"][0])
        except self._elb.exceptions.ClientError as err:
            if err.response["Error"]["Code"] == "ListenerNotFound":
                raise ApplicationError(
                    f"listener_arn: no listener {arn}", type="ListenerNotFound", non_retryable=True
                ) from None
            raise

    @activity.defn(name="elb.set_listener_certificate", no_thread_cancel_exception=True)
    @heartbeating
    def set_listener_certificate(self, req: SetCertificateRequest) -> SetCertificateResult:
        """Make `certificate_arn` the listener's default certificate; nothing is sent when
        the listener already serves it."""
        current = _default_certificate(self._describe_listener(req.listener_arn))
        result = SetCertificateResult(
            listener_arn=req.listener_arn,
            previous=current,
            certificate_arn=req.certificate_arn,
            changed=False,
            reason="",
        )
        if current == req.certificate_arn:
            result.reason = f"already serves {_short(current)}: nothing to change"
            return result
        if req.expected_current is not None and current != req.expected_current:
            raise ApplicationError(
                f"the listener serves {_short(current)} now, not {_short(req.expected_current)} "
                "as planned: someone changed it; nothing was changed",
                type="ListenerChanged",
                non_retryable=True,
            )
        self._aws.mutating("elbv2").modify_listener(
            ListenerArn=req.listener_arn, Certificates=[{"CertificateArn": req.certificate_arn}]
        )
        result.changed = True
        result.reason = f"{_short(current)} -> {_short(req.certificate_arn)}"
        return result


def _default_certificate(raw: dict[str, Any]) -> str | None:
    certs = raw.get("Certificates") or []
    default = next((c for c in certs if c.get("IsDefault")), certs[0] if certs else None)
    return default.get("CertificateArn") if default else None


def _listener(raw: dict[str, Any], load_balancer: str) -> HttpsListener:
    return HttpsListener(
        arn=raw["ListenerArn"],
        load_balancer=load_balancer,
        load_balancer_arn=raw["LoadBalancerArn"],
        port=int(raw.get("Port", 0)),
        protocol=raw.get("Protocol", ""),
        certificate_arn=_default_certificate(raw),
        ssl_policy=raw.get("SslPolicy"),
    )
