"""CertificateRenewal workflow logic on a time-skipping test server, with fake activities
(the real ones run against the sandbox's moto in tests/activities/test_acm_elb_route53.py)."""

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from tests.fakes.approvers import signed
from tests.fakes.certs import ACM, DOMAIN, FakeCerts, cert, listener
from tests.fakes.systems import FakeSystems
from tests.temporal_env import eventually, execute, gate_open, keep_history, running, start, until
from workflows.cert_renewal import CertificateRenewal, CertRenewalInput
from workflows.models import RunbookResult

pytestmark = pytest.mark.timeout(120)
NEW = ACM + "renewed2-0002"


@pytest.fixture
async def fakes(roster: tuple[Path, Path], ts_env: WorkflowEnvironment) -> FakeCerts:
    # Certificates dated by the server's clock, which time skipping moves on.
    now = await ts_env.get_current_time()
    return FakeCerts(FakeSystems(roster), now=now)


def renewal_input(**fields: Any) -> CertRenewalInput:
    return CertRenewalInput(requested_by="alice", severity="P2", **fields)


async def test_renewed_after_approval(ts_env: WorkflowEnvironment, fakes: FakeCerts) -> None:
    async with running(ts_env, [CertificateRenewal], fakes.activities()) as queue:
        handle = await start(ts_env, queue, renewal_input())
        status = await until(handle, gate_open)
        gate = status.pending_gate
        assert gate is not None
        # The new certificate is obtained before the gate; the listener is untouched.
        assert fakes.calls.count("request_certificate") == 1 and not fakes.swaps
        assert "IMPORTED ISSUED: expires in 20 days" in gate.summary
        assert "New certificate renewed2 is ISSUED" in gate.summary
        assert gate.plan[-2].startswith("Make renewed2 the default certificate of ")
        await handle.execute_update("approve", await signed(handle, "bob"))
        result: RunbookResult = await handle.result()
        await keep_history(handle, "cert_renewal_approved")
    assert result.outcome == "completed", result.summary
    [req] = fakes.requests
    assert req.domain == DOMAIN and re.fullmatch(r"\w{32}", req.idempotency_token)
    [record] = fakes.records
    assert record.name.startswith("_d930") and record.value.endswith("acm-validations.aws.")
    [swap] = fakes.swaps
    assert swap.certificate_arn == NEW and swap.expected_current == ACM + "imported-0001"
    assert fakes.listeners[0].certificate_arn == NEW
    assert "prod-revenue-context-alb:443 now serves renewed2" in result.summary
    order = [c for c in fakes.calls if c in ("request_certificate", "upsert_record")]
    assert order == ["request_certificate", "upsert_record"]
    assert fakes.calls.index("wait_issued") < fakes.calls.index("set_listener_certificate")
    verdicts = {f.check: f.verdict for f in result.findings}
    assert verdicts["certificate"] == "failing" and verdicts["hosted zone"] == "ok"
    assert fakes.gate and fakes.gate.notes[-1].kind == "resolved"


async def test_rejected_changes_no_listener(ts_env: WorkflowEnvironment, fakes: FakeCerts) -> None:
    async with running(ts_env, [CertificateRenewal], fakes.activities()) as queue:
        handle = await start(ts_env, queue, renewal_input())
        await until(handle, gate_open)
        await handle.execute_update("reject", await signed(handle, "bob", approve=False))
        result: RunbookResult = await handle.result()
        await keep_history(handle, "cert_renewal_rejected")
    assert result.outcome == "rejected" and not fakes.swaps
    assert "stays in ACM unused: a later run offers it again" in result.summary


async def test_a_certificate_not_yet_issued_keeps_the_run_waiting(
    ts_env: WorkflowEnvironment, fakes: FakeCerts
) -> None:
    fakes.issued = asyncio.Event()
    async with running(ts_env, [CertificateRenewal], fakes.activities()) as queue:
        handle = await start(ts_env, queue, renewal_input(poll_seconds=5))
        await until(handle, lambda s: s.phase == "awaiting certificate")
        await eventually(lambda: fakes.pending_polls >= 5, "ACM to be asked a few times")
        status = await handle.query(CertificateRenewal.status)
        assert status.phase == "awaiting certificate" and status.pending_gate is None
        waiting = status.timeline[-1]
        assert waiting.name == "wait for renewed2 ISSUED" and waiting.outcome == "running"
        assert not fakes.swaps
        fakes.issued.set()
        await until(handle, gate_open)
        await handle.execute_update("approve", await signed(handle, "bob"))
        result: RunbookResult = await handle.result()
    assert result.outcome == "completed" and len(fakes.swaps) == 1


@pytest.mark.parametrize(
    ("never_issued", "expected"),
    [
        ("VALIDATION_TIMED_OUT", "is VALIDATION_TIMED_OUT; ACM will not issue it"),
        (None, "ACM did not issue the certificate within 1 h"),
    ],
)
async def test_a_certificate_never_issued_fails_and_notifies(
    ts_env: WorkflowEnvironment, fakes: FakeCerts, never_issued: str | None, expected: str
) -> None:
    fakes.never_issued = never_issued
    # No answer from ACM, attempt after attempt: the 1-hour bound ends the wait.
    fakes.wait_fails = never_issued is None
    async with running(ts_env, [CertificateRenewal], fakes.activities()) as queue:
        handle = await start(ts_env, queue, renewal_input(issue_timeout_hours=1))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert expected in str(failed.value.cause)
    assert fakes.gate and fakes.gate.notes[-1].kind == "failed"
    assert expected in fakes.gate.notes[-1].text
    assert not fakes.swaps and not any(n.kind == "approval_request" for n in fakes.gate.notes)


async def test_dry_run_plans_without_changing(
    ts_env: WorkflowEnvironment, fakes: FakeCerts
) -> None:
    async with running(ts_env, [CertificateRenewal], fakes.activities()) as queue:
        result: RunbookResult = await execute(ts_env, queue, renewal_input(dry_run=True))
    assert result.outcome == "dry_run"
    assert result.plan[0].startswith(f"Request a certificate for {DOMAIN} from ACM")
    assert "request_certificate" not in fakes.calls and not fakes.swaps


async def test_an_issued_certificate_in_acm_is_reused(
    ts_env: WorkflowEnvironment, fakes: FakeCerts
) -> None:
    fakes.certificates.append(
        cert("spare003-0003", 300, now=fakes.now)
    )  # e.g. left by a rejected run
    async with running(ts_env, [CertificateRenewal], fakes.activities()) as queue:
        handle = await start(ts_env, queue, renewal_input())
        status = await until(handle, gate_open)
        assert status.pending_gate and "ACM already holds spare003" in status.pending_gate.summary
        await handle.execute_update("approve", await signed(handle, "bob"))
        result: RunbookResult = await handle.result()
        await keep_history(handle, "cert_renewal_reused_issued_certificate")
    assert result.outcome == "completed" and "request_certificate" not in fakes.calls
    assert [s.certificate_arn for s in fakes.swaps] == [ACM + "spare003-0003"]


@pytest.mark.parametrize(
    ("setup", "outcome", "expected"),
    [
        ("healthy", "completed", "ACM renews it (AMAZON_ISSUED, ELIGIBLE): nothing to do"),
        ("other domain", "refused", f"serves {DOMAIN}: no certificate to renew"),
        ("no zone", "refused", "no Route 53 hosted zone"),
    ],
)
async def test_nothing_is_requested_when_there_is_nothing_to_do(
    ts_env: WorkflowEnvironment, fakes: FakeCerts, setup: str, outcome: str, expected: str
) -> None:
    if setup == "healthy":
        fakes.certificates = [cert("healthy4-0004", 200, now=fakes.now)]
        fakes.listeners = [listener("https", 443, ACM + "healthy4-0004")]
    elif setup == "other domain":
        fakes.certificates = [
            cert("other005-0005", 5, domain="www.revenue-context.com", now=fakes.now)
        ]
        fakes.listeners = [listener("https", 443, ACM + "other005-0005")]
    else:
        fakes.zone = None
    async with running(ts_env, [CertificateRenewal], fakes.activities()) as queue:
        result: RunbookResult = await execute(ts_env, queue, renewal_input())
    assert result.outcome == outcome and expected in result.summary, result.summary
    assert "request_certificate" not in fakes.calls and not fakes.swaps


async def test_listener_not_updated_fails_loudly(
    ts_env: WorkflowEnvironment, fakes: FakeCerts
) -> None:
    fakes.stuck = True
    async with running(ts_env, [CertificateRenewal], fakes.activities()) as queue:
        handle = await start(ts_env, queue, renewal_input(verify_checks=2))
        await until(handle, gate_open)
        await handle.execute_update("approve", await signed(handle, "bob"))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert "after 2 reads: prod-revenue-context-alb:443 serves imported" in str(failed.value.cause)
    assert fakes.gate and fakes.gate.notes[-1].kind == "failed"


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"domain": "not a domain"}, "domain"),
        ({"domain": "api.prod.revenue-context.com", "days_before_expiry": 0}, "days_before_expiry"),
        ({"load_balancers": ["no_underscores"]}, "load_balancers"),
        ({"issue_timeout_hours": 100}, "issue_timeout_hours"),
        ({"domian": "api.example.com"}, "domian"),
    ],
)
async def test_bad_input_is_refused_naming_the_field(
    ts_env: WorkflowEnvironment, fakes: FakeCerts, bad: dict[str, Any], field: str
) -> None:
    async with running(ts_env, [CertificateRenewal], fakes.activities()) as queue:
        handle = await ts_env.client.start_workflow(
            "CertificateRenewal", bad, id=f"cert-renewal/bad-{uuid.uuid4()}", task_queue=queue
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert field in str(failed.value.cause)
    assert not fakes.calls
