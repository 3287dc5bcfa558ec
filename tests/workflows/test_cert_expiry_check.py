"""CertExpiryCheck on the Temporal dev server (it starts workflows by signal-with-start): one
renewal per expiring, expired or ineligible domain, none for a healthy one, and never a
second one while a renewal runs. The listeners and certificates are fakes (the real
activities are tested against moto in tests/activities/test_acm_elb_route53.py); the renewal
is a stub that runs until told to finish (the real one: tests/workflows/test_cert_renewal.py)."""

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.alarms import AlarmActivities, AlarmStarter
from tests.fakes.certs import ACM, FakeCerts, cert, listener
from tests.fakes.stub_runbook import STUB_WORKER, StubRunbook, stub_procedure
from tests.temporal_env import keep_history, running
from workflows import registry
from workflows.cert_expiry_check import (
    CertExpiryCheck,
    CertExpiryCheckInput,
    CertExpiryCheckResult,
)
from workflows.models import RunbookStatus

pytestmark = pytest.mark.timeout(120)


@dataclass
class Check:
    client: Client
    queue: str
    fakes: FakeCerts
    domains: dict[str, str]  # role -> domain, unique to the test

    async def run(self, keep: str | None = None) -> CertExpiryCheckResult:
        handle = await self.client.start_workflow(
            CertExpiryCheck.run,
            CertExpiryCheckInput(),
            id=f"cert-expiry-check-{time.monotonic_ns()}",
            task_queue=self.queue,
        )
        result = await handle.result()
        if keep:
            await keep_history(handle, keep)
        return result

    async def status(self, role: str) -> RunbookStatus:
        handle = self.client.get_workflow_handle(f"cert-renewal/production/{self.domains[role]}")
        return await handle.query("status", result_type=RunbookStatus)


@pytest.fixture
async def check(
    dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Check]:
    stamp = time.monotonic_ns()
    domains = {
        role: f"{role}-{stamp}.revenue-context.com"
        for role in ("expiring", "healthy", "imported", "expired")
    }
    fakes = FakeCerts()
    fakes.certificates = [
        cert("expiring-1", 10, domain=domains["expiring"]),
        cert("healthy0-2", 200, domain=domains["healthy"]),
        cert("imported-3", 200, domain=domains["imported"], kind="IMPORTED"),
        cert("expired0-4", -1, domain=domains["expired"], status="EXPIRED"),
    ]
    fakes.listeners = [
        listener("a", 443, ACM + "expiring-1"),
        listener("b", 8443, ACM + "expiring-1"),  # the same certificate on two listeners
        listener("c", 443, ACM + "healthy0-2", alb="other-alb"),
        listener("d", 443, ACM + "imported-3", alb="third-alb"),
        listener("e", 443, ACM + "expired0-4", alb="fourth-alb"),
        listener("f", 443, ACM + "deleted0-5", alb="fifth-alb"),  # ACM does not know it
    ]
    monkeypatch.setitem(
        registry.PROCEDURES,
        "cert-renewal",
        stub_procedure("cert-renewal", "domain"),
    )
    queue = f"cert-check-{stamp}"
    activities = [*fakes.activities(), AlarmActivities(AlarmStarter(dev_env.client)).start_once]
    async with running(
        dev_env, [CertExpiryCheck, StubRunbook], activities, queue=queue, **STUB_WORKER
    ):
        found = Check(dev_env.client, queue, fakes, domains)
        yield found
        for role in ("expiring", "imported", "expired"):
            with contextlib.suppress(RPCError):  # not started if the test failed early
                workflow_id = f"cert-renewal/production/{domains[role]}"
                handle = dev_env.client.get_workflow_handle(workflow_id)
                await handle.signal(StubRunbook.finish)


async def test_one_renewal_per_domain_that_needs_one_and_never_a_second(check: Check) -> None:
    first = await check.run(keep="cert_expiry_check_started_renewals")
    d = check.domains
    assert first.renewals == dict.fromkeys([d["expiring"], d["imported"], d["expired"]], "started")
    rows = {row.domain: row for row in first.certificates}
    assert rows[d["expiring"]].verdict == "expiring"
    assert rows[d["expiring"]].listeners == [
        "prod-revenue-context-alb:443",
        "prod-revenue-context-alb:8443",
    ]
    assert rows[d["healthy"]].verdict == "ok" and rows[d["healthy"]].workflow_id is None
    assert rows[d["imported"]].verdict == "ineligible"
    assert "ACM will not renew it (imported)" in rows[d["imported"]].reason
    assert rows[d["expired"]].verdict == "expired"
    assert first.unknown == [ACM + "deleted0-5"]
    assert rows[d["expiring"]].workflow_id == f"cert-renewal/production/{d['expiring']}"

    expiring = await check.status("expiring")
    assert expiring.severity == "P2" and expiring.resource == d["expiring"]
    started = next(s for s in expiring.timeline if s.name == "started")
    assert "schedule:cert-expiry-check via schedule" in started.detail
    assert (await check.status("expired")).severity == "P1"

    second = await check.run(
        keep="cert_expiry_check_signalled_running_renewals"
    )  # the renewals are still running: signalled, not started
    assert set(second.renewals.values()) == {"signalled"} and len(second.renewals) == 3
    line = next(
        s for s in (await check.status("expiring")).timeline if s.name.startswith("alarm cert")
    )
    assert line.detail.startswith("2x via schedule") and "expires in 10 days" in line.detail
