"""api-errors hands off to the procedure its diagnosis points at (workflows/handoffs.py): the
approver's choice is bounded to what was offered, the chosen procedure starts once under its
usual id with its own gate, and both runs link the other (timelines and incident log). Real
hand-off activity and HighMemory workflow, fake systems, on the dev server (a run left at its
gate must not be timed out by a time-skipping server while the test waits on another)."""

import uuid
from pathlib import Path

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from activities.handoffs import HandoffActivities
from tests.fakes.approvers import signed
from tests.fakes.high_memory import FakeMemory
from tests.fakes.lag_and_errors import FakeLagAndErrors
from tests.fakes.systems import FakeSystems
from tests.temporal_env import gate_open, keep_history, running, start, until
from workflows.api_errors import ApiErrorRateSpike, ApiErrorsInput
from workflows.handoffs import choice
from workflows.high_memory import HighMemory
from workflows.models import RunbookResult

pytestmark = pytest.mark.timeout(180)
INTAKE_KEY = "test-intake-key"


async def api_errors_run(
    env: WorkflowEnvironment, queue: str, service: str
) -> tuple[WorkflowHandle, RunbookResult | None]:
    inp = ApiErrorsInput(requested_by="alice", service=service, error_window_seconds=1)
    handle = await start(env, queue, inp)
    await until(handle, gate_open)
    return handle, None


async def test_api_errors_hands_off_to_high_memory_once_and_links_both_runs(
    dev_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    gate = FakeSystems(roster, intake_key=INTAKE_KEY)
    service = f"svc-{uuid.uuid4().hex[:8]}"  # its own ids on the shared dev server
    fakes = FakeLagAndErrors(gate, oom_stopped={service: 2})
    memory = FakeMemory(gate)
    target_queue = f"test-{uuid.uuid4()}"
    handoff = HandoffActivities(dev_env.client, target_queue, INTAKE_KEY)
    async with (
        running(dev_env, [HighMemory], memory.activities(), queue=target_queue),
        running(dev_env, [ApiErrorRateSpike], [*fakes.activities(), handoff.start]) as queue,
    ):
        first, _ = await api_errors_run(dev_env, queue, service)
        status = await until(first, gate_open)
        pending = status.pending_gate
        assert pending and pending.gate == "hand-off" and "run high-memory" in pending.summary
        [param] = pending.params
        assert (param.name, param.choices) == ("start", ["high-memory"])
        # A choice that was not offered is refused, naming the field and what is allowed.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await first.execute_update(
                ApiErrorRateSpike.approve, await signed(first, "bob", params={"start": "scale"})
            )
        assert "params.start: 'scale' is not offered; allowed: high-memory" in str(
            refused.value.cause
        )
        await first.execute_update(
            ApiErrorRateSpike.approve, await signed(first, "bob", params={"start": "high-memory"})
        )
        result: RunbookResult = await first.result()
        await keep_history(first, "api_errors_handoff_high_memory")
        target_id = f"high-memory/production/{service}"
        assert (
            result.outcome == "completed" and f"high-memory started: {target_id}" in result.summary
        )
        assert not any(c.startswith("scale") for c in fakes.calls)

        # The started run is an ordinary run at its own gate, requested by the approver who
        # chose it, proven by the worker's hand-off signature, linked back.
        started = dev_env.client.get_workflow_handle(target_id, result_type=RunbookResult)
        target = await until(started, gate_open)
        assert target.pending_gate and target.pending_gate.requested_by == "bob"
        lines = {s.name: s.detail for s in target.timeline}
        assert lines["started by"] == f"hand-off from api-errors/production/{service}"
        assert "start signed for bob's hand-off" in lines["requester"]
        run_id = (await started.describe()).run_id

        # A second api-errors run that chooses the same: the running one is linked, not doubled.
        second, _ = await api_errors_run(dev_env, queue, service)
        await second.execute_update(
            ApiErrorRateSpike.approve, await signed(second, "erin", params={"start": "high-memory"})
        )
        again: RunbookResult = await second.result()
        assert "high-memory already running, linked" in again.summary
        assert (await started.describe()).run_id == run_id
        step = next(s for s in again.timeline if s.name == "start high-memory")
        assert "already running; linked, not started twice" in step.detail

        # bob asked for it: on P1 someone else decides its gate.
        with pytest.raises(WorkflowUpdateFailedError) as own:
            await started.execute_update(HighMemory.approve, await signed(started, "bob"))
        assert "requested this run" in str(own.value.cause)
        await started.execute_update(
            HighMemory.reject, await signed(started, "alice", approve=False, reason="drill")
        )
        assert (await started.result()).outcome == "rejected"

    records = {(r.procedure, r.started_by): r for r in gate.incidents}
    api_ids = [r.started for r in gate.incidents if r.procedure == "api-errors"]
    assert api_ids == [[target_id], [target_id]]
    hm = records[("high-memory", f"api-errors/production/{service}")]
    assert hm.trigger == "handoff" and hm.requested_by == "bob" and hm.requester_proven


def test_the_choice_is_bounded_and_every_approver_must_choose_the_same() -> None:
    spec = choice(["db-failover", "high-memory"])
    assert spec.check("high-memory") is None
    assert spec.check("scale") == (
        "params.start: 'scale' is not offered; allowed: db-failover, high-memory"
    )
    assert spec.text({}) == "db-failover"  # the recommendation, by default
    assert spec.allowed() == "one of db-failover, high-memory (default db-failover)"
    # Four eyes: a second approver choosing another procedure is refused (the gate's rule).
    assert spec.differs({"start": "high-memory"}, {})
    assert not spec.differs({"start": "db-failover"}, {})
