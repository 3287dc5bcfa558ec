"""LlmBudgetExhaustion workflow logic on the time-skipping test server, with fake activities."""

import re
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment

from tests.fakes.approvers import signed
from tests.fakes.llm_budget import FakeLlm
from tests.fakes.systems import FakeSystems
from tests.temporal_env import execute, gate_open, keep_history, running, start, until
from workflows.llm_budget import LlmBudgetExhaustion, LlmBudgetInput
from workflows.models import RunbookResult

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fakes(roster: tuple[Path, Path]) -> FakeLlm:
    return FakeLlm(FakeSystems(roster))


def budget_input(**fields: Any) -> LlmBudgetInput:
    return LlmBudgetInput(requested_by="alice", **fields)


async def approve(handle: WorkflowHandle, budget: str | None = None) -> None:
    params = {"daily_budget": budget} if budget else {}
    await handle.execute_update("approve", await signed(handle, "bob", params=params))


async def test_approved_budget_is_set_once_redeployed_verified_and_watched(
    ts_env: WorkflowEnvironment, fakes: FakeLlm
) -> None:
    fakes.watch_spend = [120.0, 150.0, 210.0, 230.0, 240.0]
    async with running(ts_env, [LlmBudgetExhaustion], fakes.activities()) as queue:
        handle = await start(ts_env, queue, budget_input(watch_minutes=5))
        status = await until(handle, gate_open)
        assert status.pending_gate
        [spec] = status.pending_gate.params
        # bounds from the worker's configuration, default double the current budget
        assert (spec.name, spec.minimum, spec.maximum, spec.default) == (
            "daily_budget",
            1,
            500,
            200,
        )
        await approve(handle, "250")
        result: RunbookResult = await handle.result()
        await keep_history(handle, "llm_budget_approved")
    assert result.outcome == "completed"
    [write] = fakes.writes
    assert (write.key, write.value) == ("LLM_DAILY_BUDGET", 250.0)
    assert re.fullmatch(r"[0-9a-f]{32}", write.client_request_token)
    assert fakes.calls.count("force api") == 1 and "rollout api" in fakes.calls
    assert fakes.calls.index("set_number") < fakes.calls.index("force api")
    assert fakes.calls.index("rollout api") < fakes.calls.index("wait_budget_in_force")
    kinds = [n.kind for n in fakes.gate.notes]
    assert kinds == ["approval_request", "resolved", "escalation"]  # one 80% alert only
    alert = fakes.gate.notes[-1]
    assert "84%" in alert.title  # 210 of 250 is the first reading past 80%
    watch = next(s for s in result.timeline if s.name == "watch spend")
    assert watch.outcome == "ok" and watch.detail.startswith("5 checks")
    assert "100 -> 250" in result.summary and "peak $240.00 of $250 (96%)" in result.summary


async def test_long_watch_continues_as_new_and_keeps_its_timeline(
    ts_env: WorkflowEnvironment, fakes: FakeLlm
) -> None:
    fakes.watch_spend = [110.0]
    async with running(ts_env, [LlmBudgetExhaustion], fakes.activities()) as queue:
        inp = budget_input(watch_minutes=24 * 60, watch_interval_seconds=600, checks_per_run=40)
        handle = await start(ts_env, queue, inp)
        await until(handle, gate_open)
        await approve(handle)
        result: RunbookResult = await handle.result()  # follows the continued runs
        first_run = handle.result_run_id
        last = await handle.describe()
        await keep_history(handle, "llm_budget_watch_continued_as_new")  # the first run
        ended = ts_env.client.get_workflow_handle(handle.id, run_id=last.run_id)
        await keep_history(ended, "llm_budget_watch_continued_run_completed")
    assert last.run_id != first_run  # it did continue as new
    assert result.outcome == "completed"
    assert fakes.calls.count("set_number") == 1 and fakes.calls.count("force api") == 1
    names = [s.name for s in result.timeline]
    assert "set LLM_DAILY_BUDGET" in names and "gate raise-budget approved" in names
    watch = next(s for s in result.timeline if s.name == "watch spend")
    assert watch.detail.startswith("144 checks")  # every 10 min for 24 h, across 4 runs
    assert result.decision and result.decision.params["daily_budget"] == "200"


async def test_failed_rollout_is_notified_and_fails_the_run(
    ts_env: WorkflowEnvironment, fakes: FakeLlm
) -> None:
    fakes.rollout_error = "api: rollout of prod-api:3 FAILED: tasks failed to start"
    async with running(ts_env, [LlmBudgetExhaustion], fakes.activities()) as queue:
        handle = await start(ts_env, queue, budget_input())
        await until(handle, gate_open)
        await approve(handle)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        status = await handle.query(LlmBudgetExhaustion.status)
        await keep_history(handle, "llm_budget_rollout_failed")
    assert "tasks failed to start" in str(failed.value.cause)
    assert fakes.gate.notes[-1].kind == "failed"
    assert status.outcome == "failed" and "wait_budget_in_force" not in fakes.calls
    step = next(s for s in status.timeline if s.name == "set LLM_DAILY_BUDGET")
    assert "undo: make version v-old AWSCURRENT again" in step.detail


async def test_dry_run_and_rejection_change_nothing(
    ts_env: WorkflowEnvironment, fakes: FakeLlm
) -> None:
    async with running(ts_env, [LlmBudgetExhaustion], fakes.activities()) as queue:
        dry: RunbookResult = await execute(ts_env, queue, budget_input(dry_run=True))
        handle = await start(ts_env, queue, budget_input())
        await until(handle, gate_open)
        await handle.execute_update(
            "reject", await signed(handle, "bob", approve=False, reason="spend not justified")
        )
        rejected: RunbookResult = await handle.result()
        await keep_history(handle, "llm_budget_rejected")
    assert dry.outcome == "dry_run" and "default 200" in dry.plan[0]
    assert "5 keys are kept" in dry.plan[0]
    assert rejected.outcome == "rejected" and "spend not justified" in rejected.summary
    assert not fakes.writes and not any(c.startswith("force") for c in fakes.calls)
    verdicts = {f.check: f.verdict for f in rejected.findings}
    assert verdicts["/metrics llm_budget"] == "failing" and verdicts["call rate"] == "unavailable"


async def test_unreadable_secret_is_refused_without_a_gate(
    ts_env: WorkflowEnvironment, fakes: FakeLlm
) -> None:
    fakes.secret_error = "secret_id: no secret named 'prod/revenue-context/config'"
    async with running(ts_env, [LlmBudgetExhaustion], fakes.activities()) as queue:
        result: RunbookResult = await execute(ts_env, queue, budget_input())
    assert result.outcome == "refused" and "nothing is done blind" in result.summary
    assert not fakes.writes


async def test_started_with_empty_input_uses_the_runbook_defaults(
    ts_env: WorkflowEnvironment, fakes: FakeLlm
) -> None:
    async with running(ts_env, [LlmBudgetExhaustion], fakes.activities()) as queue:
        handle = await ts_env.client.start_workflow(
            "LlmBudgetExhaustion",
            {},
            id="llm-budget/production/prod/revenue-context/config",  # the id naming it
            task_queue=queue,
            id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
        )
        status = await until(handle, gate_open)
        await handle.terminate("test done")  # no gate timers left for later tests
    assert status.resource == "prod/revenue-context/config" and status.severity == "P1"
    assert status.pending_gate and "api" in status.pending_gate.plan[1]
    assert "every 60s for 60 min" in status.pending_gate.plan[3]
