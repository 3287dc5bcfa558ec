"""HighMemory workflow logic on a time-skipping test server, with fake activities."""

import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.fakes.approvers import signed, write_roster
from tests.fakes.remediation import FakeMemory, GateSupport
from tests.temporal_env import keep_history, private_ts_env, until
from worker import INTERCEPTORS
from workflows.high_memory import HighMemory, HighMemoryInput
from workflows.models import RunbookResult

pytestmark = pytest.mark.timeout(120)
ts_env = pytest.fixture(scope="module", name="ts_env")(private_ts_env)


@pytest.fixture
def fakes(tmp_path: Path) -> FakeMemory:
    return FakeMemory(GateSupport(write_roster(tmp_path)))


@asynccontextmanager
async def running(env: WorkflowEnvironment, fakes: FakeMemory) -> AsyncIterator[str]:
    queue = f"test-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[HighMemory],
        activities=fakes.activities(),
        activity_executor=ThreadPoolExecutor(4),
        interceptors=INTERCEPTORS,
    ):
        yield queue


async def start(client: Client, queue: str, **fields: object) -> WorkflowHandle:
    inp = HighMemoryInput(requested_by="alice", **fields)  # type: ignore[arg-type]
    return await client.start_workflow(
        HighMemory.run, inp, id=f"high-memory/{uuid.uuid4()}", task_queue=queue
    )


async def test_memory_doubled_on_a_new_revision_after_approval(
    ts_env: WorkflowEnvironment, fakes: FakeMemory
) -> None:
    fakes.after = [3900.0, 2100.0]  # the first reading is stale, the second one under 80%
    async with running(ts_env, fakes) as queue:
        handle = await start(ts_env.client, queue)
        status = await until(handle, lambda s: s.pending_gate is not None)
        assert status.pending_gate and "2048 -> 4096 MiB" in status.pending_gate.summary
        assert "3 tasks OOM-killed" in status.pending_gate.summary
        await handle.execute_update("approve", await signed(handle, "bob"))
        result: RunbookResult = await handle.result()
        await keep_history(handle, "high_memory_approved")
    assert result.outcome == "completed"
    [req] = fakes.registered
    assert req.memory == 4096 and req.task_definition.endswith("prod-api:3")
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
    async with running(ts_env, fakes) as queue:
        result: RunbookResult = await (await start(ts_env.client, queue, memory=memory)).result()
    assert result.outcome == "refused" and expected in result.summary
    assert result.summary.startswith("memory: ")
    assert not fakes.registered


async def test_memory_still_high_fails_loudly(
    ts_env: WorkflowEnvironment, fakes: FakeMemory
) -> None:
    fakes.after = [3900.0]
    async with running(ts_env, fakes) as queue:
        handle = await start(ts_env.client, queue, verify_checks=3)
        await until(handle, lambda s: s.pending_gate is not None)
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
    async with running(ts_env, fakes) as queue:
        result: RunbookResult = await (await start(ts_env.client, queue, dry_run=True)).result()
    assert result.outcome == "dry_run"
    assert result.plan[0].startswith("Register a revision of prod-api copied from prod-api:3")
    assert not fakes.registered and "use" not in fakes.calls
