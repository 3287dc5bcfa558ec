"""HighMemory workflow logic on a time-skipping test server, with fake activities."""

from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from tests.fakes.approvers import signed
from tests.fakes.high_memory import FakeMemory
from tests.fakes.systems import FakeSystems
from tests.temporal_env import execute, gate_open, keep_history, running, start, until
from workflows.high_memory import HighMemory, HighMemoryInput
from workflows.models import RunbookResult

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fakes(roster: tuple[Path, Path]) -> FakeMemory:
    return FakeMemory(FakeSystems(roster))


def memory_input(**fields: Any) -> HighMemoryInput:
    return HighMemoryInput(requested_by="alice", **fields)


async def test_memory_doubled_on_a_new_revision_after_approval(
    ts_env: WorkflowEnvironment, fakes: FakeMemory
) -> None:
    fakes.after = [3900.0, 2100.0]  # the first reading is stale, the second one under 80%
    async with running(ts_env, [HighMemory], fakes.activities()) as queue:
        handle = await start(ts_env, queue, memory_input())
        status = await until(handle, gate_open)
        assert status.pending_gate and "2048 -> 4096 MiB" in status.pending_gate.summary
        assert "3 tasks OOM-killed" in status.pending_gate.summary
        await handle.execute_update("approve", await signed(handle, "bob"))
        result: RunbookResult = await handle.result()
        await keep_history(handle, "high_memory_approved")
    assert result.outcome == "completed"
    [req] = fakes.registered
    assert req.memory == 4096 and req.task_definition.endswith("prod-api:3")
    assert req.containers  # the containers' own limits are raised too
    assert fakes.calls.index("register") < fakes.calls.index("use") < fakes.calls.index("rollout")
    assert "runs prod-api:4 with 4096 MiB (was 2048)" in result.summary
    assert "51%" in result.summary  # 2100 of 4096
    verdicts = {f.check: f.verdict for f in result.findings}
    assert verdicts["stopped tasks"] == "failing"


@pytest.mark.parametrize(
    ("memory", "expected"),
    [
        (3000, "valid memory with cpu 1024: 2048 to 8192 MiB in steps of 1024"),
        (16384, "valid memory with cpu 1024: 2048 to 8192 MiB in steps of 1024"),
        (2048, "not above the current 2048 MiB"),
    ],
)
async def test_invalid_memory_is_refused_naming_the_valid_sizes(
    ts_env: WorkflowEnvironment, fakes: FakeMemory, memory: int, expected: str
) -> None:
    async with running(ts_env, [HighMemory], fakes.activities()) as queue:
        result: RunbookResult = await execute(ts_env, queue, memory_input(memory=memory))
    assert result.outcome == "refused" and expected in result.summary
    assert result.summary.startswith("memory: ")
    assert not fakes.registered


async def test_memory_still_high_fails_loudly(
    ts_env: WorkflowEnvironment, fakes: FakeMemory
) -> None:
    fakes.after = [3900.0]
    async with running(ts_env, [HighMemory], fakes.activities()) as queue:
        handle = await start(ts_env, queue, memory_input(verify_checks=3))
        await until(handle, gate_open)
        await handle.execute_update("approve", await signed(handle, "bob"))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        await keep_history(handle, "high_memory_still_high")
    assert "still 95% of 4096 MiB after 3 checks" in str(failed.value.cause)
    assert fakes.gate.notes[-1].kind == "failed"
    assert fakes.calls.count("metric 5") == 3


async def test_dry_run_plans_without_changing(
    ts_env: WorkflowEnvironment, fakes: FakeMemory
) -> None:
    async with running(ts_env, [HighMemory], fakes.activities()) as queue:
        result: RunbookResult = await execute(ts_env, queue, memory_input(dry_run=True))
    assert result.outcome == "dry_run"
    assert result.plan[0].startswith("Register a revision of prod-api copied from prod-api:3")
    assert not fakes.registered and "use" not in fakes.calls
