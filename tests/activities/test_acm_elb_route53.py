"""The cert-renewal activities against the sandbox's moto (ACM, ELBv2, Route 53), and what the
sandbox makes of them: a certificate is issued once its validation CNAME is in the zone, and
`/health/detailed` reports the certificate the listener serves."""

import threading
import time

import httpx
import pytest
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment

from activities.acm import (
    AcmActivities,
    CertificatesRequest,
    ListCertificatesRequest,
    RequestCertificateRequest,
    WaitIssuedRequest,
)
from activities.aws_access import AwsAccess
from activities.elb import ElbActivities, ListenersRequest, SetCertificateRequest
from activities.route53 import RecordRequest, Route53Activities, ZoneRequest
from tests.temporal_env import run_activity

DOMAIN = "api.prod.revenue-context.com"
ALB = "prod-revenue-context-alb"


@pytest.fixture
def acm(aws_env: dict[str, str]) -> AcmActivities:
    return AcmActivities(AwsAccess())


@pytest.fixture
def elb(aws_env: dict[str, str]) -> ElbActivities:
    return ElbActivities(AwsAccess(), [ALB])


@pytest.fixture
def route53(aws_env: dict[str, str]) -> Route53Activities:
    return Route53Activities(AwsAccess())


def test_the_listener_serves_an_imported_certificate_near_expiry(
    sandbox: httpx.Client, acm: AcmActivities, elb: ElbActivities, route53: Route53Activities
) -> None:
    listeners = run_activity(elb.https_listeners, ListenersRequest())
    [https] = listeners.listeners  # the HTTP listener on 80 is not listed
    assert (https.load_balancer, https.port, https.protocol) == (ALB, 443, "HTTPS")
    assert listeners.load_balancers == [ALB] and not listeners.missing
    [served] = run_activity(
        acm.describe_certificates, CertificatesRequest(arns=[https.certificate_arn])
    ).certificates
    assert (served.domain, served.type, served.status) == (DOMAIN, "IMPORTED", "ISSUED")
    assert served.renewal_eligibility == "INELIGIBLE"
    days = (served.not_after.timestamp() - time.time()) / 86400
    assert 19.9 < days <= 20
    assert sandbox.get("/health/detailed").json()["tls"]["certificate_arn"] == served.arn

    zone = run_activity(route53.find_zone, ZoneRequest(domain=DOMAIN))
    assert zone.name == "revenue-context.com." and not zone.private
    with pytest.raises(ApplicationError) as err:
        run_activity(route53.find_zone, ZoneRequest(domain="api.example.org"))
    assert err.value.non_retryable and err.value.type == "HostedZoneNotFound"
    assert "no public Route 53 hosted zone holds api.example.org." in str(err.value)
    missing = run_activity(elb.https_listeners, ListenersRequest(load_balancers=["no-such-alb"]))
    assert missing.missing == ["no-such-alb"] and not missing.listeners


def test_request_publish_issue_and_swap_each_happen_once(
    sandbox: httpx.Client, acm: AcmActivities, elb: ElbActivities, route53: Route53Activities
) -> None:
    [https] = run_activity(elb.https_listeners, ListenersRequest()).listeners
    ask = RequestCertificateRequest(domain=DOMAIN, idempotency_token="a" * 32)
    first = run_activity(acm.request_certificate, ask)
    retry = run_activity(acm.request_certificate, ask)  # same token: the same certificate
    assert first.requested and not retry.requested
    assert retry.certificate.arn == first.certificate.arn
    new = first.certificate
    assert new.status == "PENDING_VALIDATION" and new.type == "AMAZON_ISSUED"
    [record] = new.validation
    assert record.type == "CNAME" and record.name and record.value
    listed = run_activity(
        acm.list_certificates, ListCertificatesRequest(domain=DOMAIN)
    ).certificates
    assert sum(c.type == "AMAZON_ISSUED" for c in listed) == 1

    # Without its validation record ACM keeps trying: the wait goes on until cancelled.
    env = ActivityEnvironment()
    threading.Timer(1.5, env.cancel).start()
    started = time.monotonic()
    with pytest.raises(CancelledError):
        env.run(acm.wait_issued, WaitIssuedRequest(arn=new.arn, first_poll_seconds=0.2))
    assert time.monotonic() - started >= 1.4
    [pending] = run_activity(
        acm.describe_certificates, CertificatesRequest(arns=[new.arn])
    ).certificates
    assert pending.status == "PENDING_VALIDATION"

    upsert = RecordRequest(name=record.name, value=record.value, poll_seconds=0.2)
    published = run_activity(route53.upsert_record, upsert)
    again = run_activity(route53.upsert_record, upsert)
    assert published.changed and published.status == "INSYNC"
    assert not again.changed and "already points at" in again.detail
    issued = run_activity(
        acm.wait_issued, WaitIssuedRequest(arn=new.arn, poll_seconds=1, first_poll_seconds=0.2)
    )
    assert issued.status == "ISSUED" and issued.renewal_eligibility == "ELIGIBLE"

    swap = SetCertificateRequest(
        listener_arn=https.arn, certificate_arn=new.arn, expected_current=https.certificate_arn
    )
    changed = run_activity(elb.set_listener_certificate, swap)
    unchanged = run_activity(elb.set_listener_certificate, swap)
    assert changed.changed and changed.previous == https.certificate_arn
    assert not unchanged.changed and "nothing to change" in unchanged.reason
    [now] = run_activity(elb.https_listeners, ListenersRequest()).listeners
    assert now.certificate_arn == new.arn
    tls = sandbox.get("/health/detailed").json()["tls"]
    assert tls["certificate_arn"] == new.arn and tls["days_left"] > 360

    # Someone else changed the listener meanwhile: refused, nothing changed.
    stale = swap.model_copy(
        update={"certificate_arn": https.certificate_arn, "expected_current": "arn:other"}
    )
    with pytest.raises(ApplicationError) as err:
        run_activity(elb.set_listener_certificate, stale)
    assert err.value.type == "ListenerChanged" and err.value.non_retryable
    with pytest.raises(ApplicationError) as gone:
        run_activity(
            elb.set_listener_certificate,
            swap.model_copy(update={"listener_arn": https.arn[:-4] + "0000"}),
        )
    assert gone.value.type == "ListenerNotFound"


def test_reset_and_the_incident_put_an_expiring_certificate_back(
    sandbox: httpx.Client, elb: ElbActivities
) -> None:
    armed = sandbox.post("/control/incidents/cert-renewal", json={"days_left": 3})
    assert armed.status_code == 200 and 2.9 < armed.json()["days_left"] <= 3
    assert armed.json()["type"] == "IMPORTED"
    bad = sandbox.post("/control/incidents/cert-renewal", json={"days_left": -1})
    assert bad.status_code == 400
    sandbox.post("/control/reset").raise_for_status()
    state = sandbox.get("/control/certificates").json()
    assert 19.9 < state["days_left"] <= 20
    [https] = run_activity(elb.https_listeners, ListenersRequest()).listeners
    assert https.certificate_arn == state["certificate_arn"]
