"""KafkaConsumerLag, ApiErrorRateSpike and Triage logic on the time-skipping test server,
with fake activities."""

from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from tests.fakes.approvers import signed
from tests.fakes.lag_and_errors import FakeLagAndErrors, lag_result
from tests.fakes.systems import FakeSystems
from tests.temporal_env import execute, gate_open, keep_history, running, start, until
from workflows.api_errors import ApiErrorRateSpike, ApiErrorsInput
from workflows.kafka_lag import KafkaConsumerLag, KafkaLagInput
from workflows.models import RunbookResult
from workflows.triage import Triage, TriageInput

pytestmark = pytest.mark.timeout(120)
WORKFLOWS = [KafkaConsumerLag, ApiErrorRateSpike, Triage]


@pytest.fixture
def fakes(roster: tuple[Path, Path]) -> FakeLagAndErrors:
    return FakeLagAndErrors(FakeSystems(roster))


def lag_input(**fields: Any) -> KafkaLagInput:
    return KafkaLagInput(requested_by="alice", settle_seconds=30, **fields)


# ---- kafka-lag ------------------------------------------------------------------------------


async def test_kafka_lag_plans_from_drain_rate_scales_to_approved_count_and_verifies(
    ts_env: WorkflowEnvironment, fakes: FakeLagAndErrors
) -> None:
    # 3000 behind, 40/s in, 30/s consumed by 2 workers: (40 + 3000/300) / 15 = 3.3 -> 4
    fakes.lags = [lag_result(3000, 10.0), lag_result(2000), lag_result(900, -40.0)]
    async with running(ts_env, WORKFLOWS, fakes.activities()) as queue:
        handle = await start(ts_env, queue, lag_input())
        status = await until(handle, gate_open)
        gate = status.pending_gate
        assert gate and "from 2 to 4 tasks" in gate.summary and "15.0/s a worker" in gate.summary
        [param] = gate.params
        assert (param.name, param.default, param.maximum) == ("desired_count", 4, 10)
        await handle.execute_update(
            KafkaConsumerLag.approve, await signed(handle, "bob", params={"desired_count": "6"})
        )
        result: RunbookResult = await handle.result()
        await keep_history(handle, "kafka_lag_scaled")
    assert result.outcome == "completed", result.summary
    assert "scale context-engine 6" in fakes.calls and "slow_queries" not in fakes.calls
    assert "context-engine at 6 tasks; lag 1998 -> 900: falling" in result.summary
    verdicts = {f.check: f.verdict for f in result.findings}
    assert verdicts["consumer lag"] == "failing" and verdicts["/health/workers"] == "failing"
    assert verdicts["dlq"] == "degraded"
    assert fakes.gate.notes[-1].kind == "resolved"


async def test_kafka_lag_that_persists_is_not_mitigated_and_emails_the_dba(
    ts_env: WorkflowEnvironment, fakes: FakeLagAndErrors
) -> None:
    fakes.lags = [lag_result(3000, 10.0), lag_result(3000), lag_result(3300, 10.0)]
    async with running(ts_env, WORKFLOWS, fakes.activities()) as queue:
        handle = await start(ts_env, queue, lag_input())
        await until(handle, gate_open)
        await handle.execute_update(KafkaConsumerLag.approve, await signed(handle, "bob"))
        result: RunbookResult = await handle.result()
        await keep_history(handle, "kafka_lag_not_falling_emailed_dba")
    assert result.outcome == "not_mitigated", result.summary
    assert "NOT falling" in result.summary and "SELECT pg_sleep($1)" in result.summary
    assert fakes.calls.count("slow_queries") == 1
    [email] = fakes.gate.emails
    assert email.contact == "dba" and "pg_sleep" in email.text
    note = fakes.gate.notes[-1]
    assert note.kind == "escalation" and "pg_sleep" in note.text
    assert any(s.name == "email dba" and s.outcome == "ok" for s in result.timeline)


async def test_kafka_lag_whose_scale_fails_emails_infrastructure_and_fails(
    ts_env: WorkflowEnvironment, fakes: FakeLagAndErrors
) -> None:
    fakes.scale_error = "AccessDeniedException: not authorized to perform ecs:UpdateService"
    async with running(ts_env, WORKFLOWS, fakes.activities()) as queue:
        handle = await start(ts_env, queue, lag_input())
        await until(handle, gate_open)
        await handle.execute_update(KafkaConsumerLag.approve, await signed(handle, "bob"))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        await keep_history(handle, "kafka_lag_scale_failed_emailed_devops")
    [email] = fakes.gate.emails
    assert email.contact == "devops" and "ecs:UpdateService" in email.text
    note = fakes.gate.notes[-1]  # one Slack line, the failure's, naming whom it escalated to
    assert note.kind == "failed" and "devops@company.com" in note.text


async def test_kafka_lag_that_cannot_see_its_service_escalates_to_infrastructure(
    ts_env: WorkflowEnvironment, fakes: FakeLagAndErrors
) -> None:
    fakes.services_missing = True
    async with running(ts_env, WORKFLOWS, fakes.activities()) as queue:
        handle = await start(ts_env, queue, lag_input())
        result: RunbookResult = await handle.result()
        await keep_history(handle, "kafka_lag_service_unseen_escalated")
    assert result.outcome == "escalated" and "nothing is scaled blind" in result.summary
    [email] = fakes.gate.emails
    assert email.contact == "devops" and not any(c.startswith("scale") for c in fakes.calls)
    assert fakes.gate.notes[-1].kind == "escalation"


async def test_kafka_lag_at_its_cap_and_growing_only_escalates(
    ts_env: WorkflowEnvironment, fakes: FakeLagAndErrors
) -> None:
    fakes.desired["context-engine"] = 6  # already at the 6 partitions: more would sit idle
    async with running(ts_env, WORKFLOWS, fakes.activities()) as queue:
        handle = await start(ts_env, queue, lag_input())
        result: RunbookResult = await handle.result()
        await keep_history(handle, "kafka_lag_at_cap_escalated")
    assert result.outcome == "escalated", result.summary
    assert "the most this plan allows" in result.summary and "pg_sleep" in result.summary
    assert not any(c.startswith("scale") for c in fakes.calls)
    [email] = fakes.gate.emails
    assert email.contact == "dba" and "pg_sleep" in email.text
    assert fakes.gate.notes[-1].kind == "escalation"


async def test_kafka_lag_with_broker_down_is_unavailable_and_uses_the_runbook_default(
    ts_env: WorkflowEnvironment, fakes: FakeLagAndErrors
) -> None:
    fakes.lags = [None]
    async with running(ts_env, WORKFLOWS, fakes.activities()) as queue:
        handle = await start(ts_env, queue, lag_input(dry_run=True))
        result: RunbookResult = await handle.result()
        await keep_history(handle, "kafka_lag_broker_down_dry_run")
    lag = next(f for f in result.findings if f.check == "consumer lag")
    assert lag.verdict == "unavailable" and "broker down" in lag.summary
    others = [f for f in result.findings if f.check != "consumer lag"]
    assert len(others) == 4 and all(f.verdict != "unavailable" for f in others)
    assert result.outcome == "dry_run" and "from 2 to 5 tasks" in result.summary
    assert "runbook default 5" in result.summary and not any(
        c.startswith("scale") for c in fakes.calls
    )


async def test_kafka_lag_falling_on_its_own_needs_no_scaling(
    ts_env: WorkflowEnvironment, fakes: FakeLagAndErrors
) -> None:
    fakes.lags = [lag_result(1200, -200.0, produce=20, consume=220)]
    async with running(ts_env, WORKFLOWS, fakes.activities()) as queue:
        result: RunbookResult = await execute(ts_env, queue, lag_input())
    assert result.outcome == "completed" and "no scaling needed" in result.summary
    assert not any(c.startswith("scale") for c in fakes.calls)


async def test_kafka_lag_desired_count_above_the_cap_is_refused(
    dev_env: WorkflowEnvironment, fakes: FakeLagAndErrors
) -> None:
    async with running(dev_env, WORKFLOWS, fakes.activities()) as queue:
        handle = await start(dev_env, queue, lag_input(max_workers=6))
        await until(handle, gate_open)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                KafkaConsumerLag.approve,
                await signed(handle, "bob", params={"desired_count": "50"}),
            )
        refusal = str(refused.value.cause)
        assert "desired_count" in refusal and "allowed: 2 to 6" in refusal
        await handle.execute_update(
            KafkaConsumerLag.reject, await signed(handle, "bob", approve=False, reason="not now")
        )
        result: RunbookResult = await handle.result()
    assert result.outcome == "rejected" and not any(c.startswith("scale") for c in fakes.calls)


# ---- api-errors -------------------------------------------------------------------------------


async def test_api_errors_scale_then_error_rate_and_health_recover(
    ts_env: WorkflowEnvironment, fakes: FakeLagAndErrors
) -> None:
    fakes.error_shares = [0.18, 0.09, 0.003]
    async with running(ts_env, WORKFLOWS, fakes.activities()) as queue:
        inp = ApiErrorsInput(requested_by="alice", error_window_seconds=1, poll_seconds=1)
        handle = await start(ts_env, queue, inp)
        status = await until(handle, gate_open)
        assert status.pending_gate and "from 2 to 5 tasks" in status.pending_gate.summary
        await handle.execute_update(ApiErrorRateSpike.approve, await signed(handle, "bob"))
        result: RunbookResult = await handle.result()
        await keep_history(handle, "api_errors_scaled")
    assert result.outcome == "completed" and "5xx 0.3%" in result.summary
    assert "scale api 5" in fakes.calls and "wait_healthy" in fakes.calls
    checks = {f.check: f.verdict for f in result.findings}
    assert len(checks) == 8
    assert checks["5xx rate"] == "failing" and checks["ecs api tasks"] == "degraded"
    assert checks["circuit breakers"] == "ok" and checks["redis"] == "ok"


async def test_api_errors_that_stay_high_after_scaling_fail_the_run_and_escalate(
    ts_env: WorkflowEnvironment, fakes: FakeLagAndErrors
) -> None:
    fakes.error_shares = [0.18, 0.12]  # the last one repeats: scaling did not help
    async with running(ts_env, WORKFLOWS, fakes.activities()) as queue:
        inp = ApiErrorsInput(
            requested_by="alice", error_window_seconds=1, poll_seconds=5, verify_timeout_seconds=10
        )
        handle = await start(ts_env, queue, inp)
        await until(handle, gate_open)
        await handle.execute_update(ApiErrorRateSpike.approve, await signed(handle, "bob"))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        await keep_history(handle, "api_errors_not_recovered")
    assert "5xx share still 12.0%" in str(failed.value.cause)
    assert "scale api 5" in fakes.calls and "wait_healthy" not in fakes.calls
    assert fakes.gate.notes[-1].kind == "failed"
    assert "Engineering Manager" in fakes.gate.notes[-1].text


async def test_api_errors_from_the_database_offer_db_failover_without_scaling(
    ts_env: WorkflowEnvironment, fakes: FakeLagAndErrors
) -> None:
    fakes.cpu, fakes.redis_down = 96.0, True
    async with running(ts_env, WORKFLOWS, fakes.activities()) as queue:
        inp = ApiErrorsInput(requested_by="alice", error_window_seconds=1)
        handle = await start(ts_env, queue, inp)
        status = await until(handle, gate_open)
        gate = status.pending_gate
        assert gate and gate.gate == "hand-off" and "run db-failover" in gate.summary
        assert [p.choices for p in gate.params] == [["db-failover"]]
        await handle.execute_update(
            ApiErrorRateSpike.reject, await signed(handle, "bob", approve=False, reason="by hand")
        )
        result: RunbookResult = await handle.result()
        await keep_history(handle, "api_errors_handoff_rejected")
    assert result.outcome == "rejected" and "nothing was started" in result.summary
    assert (
        result.plan[-1] == "Or reject, and run it by hand: runbook start db-failover --severity P1"
    )
    redis = next(f for f in result.findings if f.check == "redis")
    assert redis.verdict == "unavailable" and "ConnectionError" in redis.summary
    assert not any(c.startswith("scale") for c in fakes.calls)
    assert fakes.gate.notes[-1].kind == "rejected"


async def test_api_errors_with_an_open_breaker_escalate(
    ts_env: WorkflowEnvironment, fakes: FakeLagAndErrors
) -> None:
    fakes.breakers_open = ["openai"]
    async with running(ts_env, WORKFLOWS, fakes.activities()) as queue:
        inp = ApiErrorsInput(requested_by="alice", error_window_seconds=1)
        handle = await start(ts_env, queue, inp)
        result: RunbookResult = await handle.result()
        await keep_history(handle, "api_errors_breaker_escalated")
    assert "circuit breaker open: openai" in result.summary
    assert not any(c.startswith("scale") for c in fakes.calls)


# ---- triage ------------------------------------------------------------------------------------


async def test_triage_is_read_only_and_suggests_the_procedure(
    ts_env: WorkflowEnvironment, fakes: FakeLagAndErrors
) -> None:
    fakes.lags = [lag_result(3000)]
    async with running(ts_env, WORKFLOWS, fakes.activities()) as queue:
        handle = await start(ts_env, queue, TriageInput(requested_by="alice"))
        result: RunbookResult = await handle.result()
        await keep_history(handle, "triage_suggests_kafka_lag")
    assert result.plan[0] == "runbook start kafka-lag --severity P1"
    assert "Suggested: kafka-lag" in result.summary
    checks = [f.check for f in result.findings]
    assert {"ecs services", "database connections", "consumer lag"} <= set(checks)
    assert sum(c.startswith("logs ") for c in checks) == 3
    assert not any(c.startswith("scale") for c in fakes.calls) and result.decision is None
