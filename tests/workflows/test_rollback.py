"""Rollback workflow logic on a time-skipping test server, with fake activities."""

import uuid
from pathlib import Path
from typing import Any

import pydantic
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from tests.fakes.approvers import signed
from tests.fakes.rollback import FakeRollback
from tests.fakes.systems import FakeSystems
from tests.temporal_env import execute, gate_open, keep_history, running, start, until
from workflows.models import RunbookResult
from workflows.registry import PROCEDURES
from workflows.rollback import Rollback, RollbackInput

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fakes(roster: tuple[Path, Path]) -> FakeRollback:
    return FakeRollback(FakeSystems(roster))


def rollback_input(**fields: Any) -> RollbackInput:
    return RollbackInput(requested_by="alice", verify_interval_seconds=5, **fields)


def updated(fakes: FakeRollback) -> list[tuple[str, str]]:
    return [(u.service, u.task_definition.rsplit("/", 1)[-1]) for u in fakes.updates]


async def test_previous_stable_revision_after_approval(
    ts_env: WorkflowEnvironment, fakes: FakeRollback
) -> None:
    async with running(ts_env, [Rollback], fakes.activities()) as queue:
        handle = await start(ts_env, queue, rollback_input(reason="failed-smoke-tests"))
        status = await until(handle, gate_open)
        assert status.pending_gate
        summary = status.pending_gate.summary
        assert "api: prod-api:4 (v1.5.0) -> prod-api:3 (v1.4.2)" in summary
        assert "reason: Failed smoke tests" in summary
        assert not fakes.updates  # nothing before the approval
        await handle.execute_update("approve", await signed(handle, "bob"))
        result: RunbookResult = await handle.result()
        await keep_history(handle, "rollback_approved")
    assert result.outcome == "completed", result.summary
    assert updated(fakes) == [
        ("api", "prod-api:3"),
        ("context-engine", "prod-context-engine:3"),
        ("orchestration-engine", "prod-orchestration-engine:3"),
    ]
    # one service after the other: each update is followed before the next one starts
    order = [c for c in fakes.calls if c.startswith(("use", "rollout"))]
    assert order == [f"{verb} {s}" for s in fakes.current for verb in ("use", "rollout")]
    assert "/health 200 version v1.4.2" in result.summary
    note = fakes.gate.notes[-1]
    assert (
        note.kind == "resolved" and note.title == "Production rollback completed to version v1.4.2"
    )


async def test_rejected_and_dry_run_change_nothing(
    ts_env: WorkflowEnvironment, fakes: FakeRollback
) -> None:
    async with running(ts_env, [Rollback], fakes.activities()) as queue:
        dry: RunbookResult = await execute(ts_env, queue, rollback_input(dry_run=True))
        handle = await start(ts_env, queue, rollback_input(target="v1.4.1"))
        await until(handle, gate_open)
        rejection = await signed(handle, "bob", approve=False, reason="fix forward instead")
        await handle.execute_update("reject", rejection)
        rejected: RunbookResult = await handle.result()
        await keep_history(handle, "rollback_rejected")
    assert dry.outcome == "dry_run" and dry.plan[0].startswith("Update api to prod-api:3")
    assert rejected.outcome == "rejected" and "fix forward instead" in rejected.summary
    assert rejected.plan[0].startswith("Update api to prod-api:2")
    assert not fakes.updates and not any(c.startswith("use") for c in fakes.calls)


async def test_service_already_on_the_target_is_skipped(
    ts_env: WorkflowEnvironment, fakes: FakeRollback
) -> None:
    fakes.current["context-engine"] = 3  # already back on v1.4.2
    async with running(ts_env, [Rollback], fakes.activities()) as queue:
        handle = await start(ts_env, queue, rollback_input(target="v1.4.2"))
        status = await until(handle, gate_open)
        assert status.pending_gate
        assert "context-engine: already on v1.4.2 (prod-context-engine:3): skipped" in (
            status.pending_gate.summary
        )
        await handle.execute_update("approve", await signed(handle, "bob"))
        result: RunbookResult = await handle.result()
        fakes.current = {s: 3 for s in fakes.current}
        nothing: RunbookResult = await execute(ts_env, queue, rollback_input(target="v1.4.2"))
    assert result.outcome == "completed"
    assert [s for s, _ in updated(fakes)] == ["api", "orchestration-engine"]
    assert "use context-engine" not in fakes.calls
    assert nothing.outcome == "completed" and "nothing to do" in nothing.summary
    assert nothing.decision is None  # no gate for nothing


async def test_services_left_out_running_the_bad_tag_are_named_in_the_plan(
    ts_env: WorkflowEnvironment, fakes: FakeRollback
) -> None:
    """Rolling back api alone while the others run v1.5.0 too: /health would stay degraded."""
    async with running(ts_env, [Rollback], fakes.activities()) as queue:
        handle = await start(ts_env, queue, rollback_input(services=["api"], dry_run=True))
        warned: RunbookResult = await handle.result()
        await keep_history(handle, "rollback_dry_run_left_out_warned")
        fakes.current.update({"context-engine": 3, "orchestration-engine": 3})  # on v1.4.2
        quiet: RunbookResult = await execute(
            ts_env, queue, rollback_input(services=["api"], dry_run=True)
        )
    warning = (
        "Warning: context-engine, orchestration-engine also run v1.5.0 and are not in the "
        "selection: /health stays degraded and verify fails while they do; to include them: "
        "--set services=api,context-engine,orchestration-engine"
    )
    assert warned.outcome == "dry_run" and warned.plan[0] == warning
    assert warning in warned.summary
    left_out = next(f for f in warned.findings if f.check == "services outside the selection")
    assert "context-engine on prod-context-engine:4" in left_out.summary
    assert quiet.outcome == "dry_run" and "Warning" not in quiet.summary
    assert quiet.plan[0].startswith("Update api to prod-api:3")
    assert not fakes.updates


async def test_failed_rollout_stops_and_notifies(
    ts_env: WorkflowEnvironment, fakes: FakeRollback
) -> None:
    fakes.fail_rollout = {"api"}
    async with running(ts_env, [Rollback], fakes.activities()) as queue:
        handle = await start(ts_env, queue, rollback_input())
        await until(handle, gate_open)
        await handle.execute_update("approve", await signed(handle, "bob"))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        status = await handle.query(Rollback.status)
        await keep_history(handle, "rollback_rollout_failed")
    assert "CannotPullContainerError" in str(failed.value.cause)
    assert status.outcome == "failed"
    steps = {s.name: s for s in status.timeline}
    assert steps["rollout api"].outcome == "failed" and "FAILED" in steps["rollout api"].detail
    assert "context-engine, orchestration-engine not changed" in steps["stopped"].detail
    assert updated(fakes) == [("api", "prod-api:3")]  # nothing after the failed one
    assert not any(c.startswith("health") for c in fakes.calls)
    note = fakes.gate.notes[-1]
    assert note.kind == "failed" and "FAILED" in note.title and "not changed" in note.text


async def test_health_not_restored_fails_loudly(
    ts_env: WorkflowEnvironment, fakes: FakeRollback
) -> None:
    fakes.health_stuck = True
    async with running(ts_env, [Rollback], fakes.activities()) as queue:
        handle = await start(ts_env, queue, rollback_input(services=["api"], verify_checks=3))
        await until(handle, gate_open)
        await handle.execute_update("approve", await signed(handle, "bob"))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert "not healthy after 3 checks: /health 503 version v1.4.2" in str(failed.value.cause)
    assert fakes.calls.count("health /health") == 3
    assert fakes.gate.notes[-1].kind == "failed"


async def test_unknown_target_tag_is_refused_naming_it(
    ts_env: WorkflowEnvironment, fakes: FakeRollback
) -> None:
    async with running(ts_env, [Rollback], fakes.activities()) as queue:
        result: RunbookResult = await execute(ts_env, queue, rollback_input(target="v9.9.9"))
    assert result.outcome == "refused"
    assert "target: no revision of prod-api has image tag 'v9.9.9'" in result.summary
    assert "tags: v1.5.0, v1.4.2, v1.4.1, v1.4.0" in result.summary
    assert not fakes.updates and fakes.gate.notes[-1].kind == "failed"


BAD_INPUTS: list[tuple[dict[str, Any], str, str]] = [
    ({"services": ["api", "billing"]}, "services", "'billing' unknown; allowed: api, "),
    ({"environment": "Prod!"}, "environment", "String should match pattern"),
    ({"target": "v1 .4"}, "target", "'v1 .4' is not an image tag"),
    ({"reason": "  "}, "reason", "must not be blank"),
    ({"services": []}, "services", "List should have at least 1 item"),
    ({"servces": ["api"]}, "servces", "Extra inputs are not permitted"),
]


async def test_bad_input_is_refused_naming_the_field(
    ts_env: WorkflowEnvironment, fakes: FakeRollback
) -> None:
    async with running(ts_env, [Rollback], fakes.activities()) as queue:
        for fields, field, message in BAD_INPUTS:
            with pytest.raises(pydantic.ValidationError) as refused:
                RollbackInput.model_validate(fields)
            [error] = refused.value.errors()
            assert error["loc"] == (field,) and message in error["msg"]
            handle = await ts_env.client.start_workflow(
                "Rollback", fields, id=f"rollback/{uuid.uuid4()}", task_queue=queue
            )
            with pytest.raises(WorkflowFailureError) as failed:
                await handle.result()
            cause = str(failed.value.cause)
            assert f"\n{field}\n" in cause and message in cause, cause
    assert not fakes.calls  # refused before anything was read or changed


def test_input_defaults_and_registry() -> None:
    inp = RollbackInput.model_validate(
        {"services": "api, context-engine", "reason": "critical-bug"}
    )
    assert inp.services == ["api", "context-engine"] and inp.reason == "Critical bug discovered"
    assert RollbackInput().services == ["api", "context-engine", "orchestration-engine"]
    assert RollbackInput(reason="Performance degradation").reason == "Performance degradation"
    assert RollbackInput(reason="v1.5 leaks sessions").reason == "v1.5 leaks sessions"
    procedure = PROCEDURES["rollback"]
    assert procedure.workflow_type == "Rollback"
    assert procedure.workflow_id(RollbackInput()) == "rollback/production"
