"""Triage names each of the seven procedures from its own signal, with the exact command, and
posts its verdict to Slack (fake activities; the real ones have their own tests)."""

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.acm import Certificate
from tests.fakes.lag_and_errors import FakeLagAndErrors, lag_result
from tests.fakes.systems import FakeSystems
from tests.temporal_env import keep_history, running, start
from workflows.models import RunbookResult
from workflows.triage import Triage, TriageInput

pytestmark = pytest.mark.timeout(120)
DOMAIN = "api.revenue-context.example"
WORKERS = ("context-engine", "orchestration-engine")


def quiet(fakes: FakeLagAndErrors, now: datetime) -> None:
    """Nothing wrong anywhere: triage names nothing."""
    fakes.lags = [lag_result(0)]
    fakes.health_status = {}
    fakes.health_body, fakes.oom_stopped = {}, {}
    fakes.log_errors = {f"/ecs/production/{s}": 0 for s in ("api", *WORKERS)}
    fakes.unhealthy_api_tasks, fakes.connections = 0, 12
    fakes.spend, fakes.certificates = 10.0, [certificate(now + timedelta(days=200))]


def certificate(not_after: datetime) -> Certificate:
    return Certificate(
        arn="arn:aws:acm:us-east-1:123456789012:certificate/abcdef12-0000",
        domain=DOMAIN,
        status="ISSUED",
        type="AMAZON_ISSUED",
        renewal_eligibility="ELIGIBLE",
        not_after=not_after,
    )


def bad_deploy(f: FakeLagAndErrors) -> None:
    f.health_status = {"/health": 503}
    f.health_body = {"/health": {"status": "degraded", "error": "v1.5.0 fails its smoke tests"}}


def lagging(f: FakeLagAndErrors) -> None:
    f.lags = [lag_result(3000)]


def erroring(f: FakeLagAndErrors) -> None:
    f.log_errors["/ecs/production/api"] = 12


def exhausted(f: FakeLagAndErrors) -> None:
    f.spend = 120.0


def expiring(f: FakeLagAndErrors) -> None:
    f.certificates = [certificate(f.certificates[0].not_after - timedelta(days=190))]


def out_of_memory(f: FakeLagAndErrors) -> None:
    f.oom_stopped = {"context-engine": 3}


def connections(f: FakeLagAndErrors) -> None:
    f.connections = 450


SCENARIOS: list[tuple[Callable[[FakeLagAndErrors], None], str]] = [
    (connections, "runbook start db-failover --severity P0"),
    (bad_deploy, "runbook start rollback --severity P0"),
    (out_of_memory, "runbook start high-memory --set service=context-engine --severity P0"),
    (lagging, "runbook start kafka-lag --severity P0"),
    (erroring, "runbook start api-errors --severity P0"),
    (exhausted, "runbook start llm-budget --severity P0"),
    (expiring, f"runbook start cert-renewal --set domain={DOMAIN} --severity P0"),
]


async def test_triage_names_each_procedure_and_posts_its_verdict(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    fakes = FakeLagAndErrors(FakeSystems(roster))
    async with running(ts_env, [Triage], fakes.activities()) as queue:
        inp = TriageInput(requested_by="alarm:api-health", trigger="alarm", severity="P0")
        quiet(fakes, await ts_env.get_current_time())
        handle = await start(ts_env, queue, inp, signed=False)
        calm: RunbookResult = await handle.result()
        assert calm.plan == [] and "No procedure fits: all checks ok" in calm.summary
        assert fakes.gate.notes[-1].kind == "info"
        for cause, command in SCENARIOS:
            # The test server's clock (it skips ahead while runs wait).
            quiet(fakes, await ts_env.get_current_time())
            cause(fakes)
            handle = await start(ts_env, queue, inp, signed=False)
            result: RunbookResult = await handle.result()
            assert result.plan == [command], (cause.__name__, result.plan, result.findings)
            note = fakes.gate.notes[-1]
            assert note.kind == "escalation" and command in note.text, cause.__name__
            assert f"runbook start --from {handle.id}" in note.text
            if cause is expiring:
                await keep_history(handle, "triage_names_cert_renewal")
    checks = {f.check for f in result.findings}
    assert {"/health", "llm spend", "certificates", "recent deploy", "ecs api tasks"} <= checks
    assert result.decision is None and not any(c.startswith("scale") for c in fakes.calls)
