"""The resource lock on the dev server: FIFO, a terminated or cancelled holder released, a
lease that ends, continue-as-new with holder and queue, a forged grant ignored."""

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.locks import (
    LockActivities,
    LockConfig,
    LockGranted,
    LockState,
    lock_id,
    read_state,
)
from activities.notify import Notification, NotifyResult
from tests.fakes.locking import HoldInput, LockHolderProbe
from tests.temporal_env import keep_history, until
from workflows.lock import ResourceLock, ecs_service
from workflows.models import RunbookStatus

pytestmark = pytest.mark.timeout(120)
# Free locks end at once here: a lingering one outlives its test's worker and queue.
FAST = LockConfig(check_seconds=0.5, linger_seconds=0)


@dataclass
class Slack:
    notes: list[Notification] = field(default_factory=list)

    @activity.defn(name="notify.slack")
    async def slack(self, note: Notification) -> NotifyResult:
        self.notes.append(note)
        return NotifyResult(delivered=True, detail="sent")


@asynccontextmanager
async def lock_worker(
    env: WorkflowEnvironment, config: LockConfig = FAST
) -> AsyncIterator[tuple[str, Slack]]:
    queue, slack, locks = f"lock-{uuid.uuid4()}", Slack(), LockActivities(config)
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[ResourceLock, LockHolderProbe],
        activities=[locks.request, locks.state, locks.holder_status, slack.slack],
    ):
        yield queue, slack


async def runbook_locks(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`runbook locks ARGS` as a separate process, as an operator runs it."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli.main", "locks", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def a_resource() -> str:
    return ecs_service("test-cluster", f"svc-{uuid.uuid4().hex[:8]}")


async def hold(client: Client, queue: str, *resources: str, lease: float = 3600) -> WorkflowHandle:
    return await client.start_workflow(
        LockHolderProbe.run,
        HoldInput(resources=list(resources), lease_seconds=lease),
        id=f"probe/{uuid.uuid4()}",
        task_queue=queue,
    )


def holding(status: RunbookStatus) -> bool:
    return status.phase == "holding"


def waiting(status: RunbookStatus) -> bool:
    return status.phase.startswith("waiting for lock")


async def lock_state(
    client: Client,
    queue: str,
    resource: str,
    ready: Callable[[LockState], bool],
    timeout: float = 30,
) -> LockState:
    deadline = time.monotonic() + timeout
    while True:
        state = await read_state(client, queue, resource)
        if state is not None and ready(state):
            return state
        assert time.monotonic() < deadline, f"lock state never held; last {state}"
        await asyncio.sleep(0.1)


async def test_a_queue_of_three_drains_in_order(dev_env: WorkflowEnvironment) -> None:
    client, resource = dev_env.client, a_resource()
    async with lock_worker(dev_env) as (queue, slack):
        first = await hold(client, queue, resource)
        await until(first, holding)
        second = await hold(client, queue, resource)
        waited = await until(second, waiting)
        third = await hold(client, queue, resource)
        await until(third, waiting)
        assert f"held by {first.id} since" in waited.phase
        state = await lock_state(client, queue, resource, lambda s: len(s.queue) == 2)
        assert state.holder and state.holder.request.workflow_id == first.id
        assert [r.workflow_id for r in state.queue] == [second.id, third.id]

        await first.signal(LockHolderProbe.let_go)
        await until(second, holding)
        assert waiting(await until(third, lambda s: True))
        await second.signal(LockHolderProbe.let_go)
        await until(third, holding)
        await third.signal(LockHolderProbe.let_go)
        for handle in (first, second, third):
            await handle.result()

        state = await lock_state(client, queue, resource, lambda s: s.holder is None)
        grants = [e.workflow_id for e in state.recent if e.what == "granted"]
        assert grants == [first.id, second.id, third.id]
        [line] = [
            s for s in (await until(third, lambda s: True)).timeline if s.name.startswith("lock ")
        ]
        assert line.outcome == "ok" and line.detail.startswith("granted after")
        # whom it waited for, as it was when it asked
        assert f"held by {first.id}" in line.detail and "1 more ahead" in line.detail
        waits = [n for n in slack.notes if "waiting for lock" in n.title]
        assert len(waits) == 2 and waits[0].fields["Held by"] == first.id


async def test_a_terminated_holder_is_released_long_before_its_lease(
    dev_env: WorkflowEnvironment,
) -> None:
    client, resource = dev_env.client, a_resource()
    async with lock_worker(dev_env) as (queue, _):
        holder = await hold(client, queue, resource, lease=3600)
        await until(holder, holding)
        waiter = await hold(client, queue, resource)
        await until(waiter, waiting)
        await holder.terminate(reason="test: a holder that cannot release")
        await until(waiter, holding)
        state = await lock_state(client, queue, resource, lambda s: True)
        gone = [e for e in state.recent if e.what == "holder gone"]
        assert gone and gone[0].workflow_id == holder.id and "TERMINATED" in gone[0].detail
        await waiter.signal(LockHolderProbe.let_go)
        await waiter.result()


async def test_a_cancelled_holder_and_a_cancelled_waiter_let_go(
    dev_env: WorkflowEnvironment,
) -> None:
    client, resource = dev_env.client, a_resource()
    # Liveness checks far apart: only the runs' own release can free the lock here.
    slow = LockConfig(check_seconds=3600, linger_seconds=0)
    async with lock_worker(dev_env, slow) as (queue, _):
        holder = await hold(client, queue, resource)
        await until(holder, holding)
        quitter = await hold(client, queue, resource)
        await until(quitter, waiting)
        last = await hold(client, queue, resource)
        await until(last, waiting)
        await quitter.cancel()
        await lock_state(client, queue, resource, lambda s: len(s.queue) == 1)
        await holder.cancel()
        await until(last, holding)
        state = await lock_state(client, queue, resource, lambda s: True)
        whats = [(e.what, e.workflow_id) for e in state.recent]
        assert ("withdrawn", quitter.id) in whats and ("released", holder.id) in whats
        assert ("granted", quitter.id) not in whats
        await last.signal(LockHolderProbe.let_go)
        await last.result()


async def test_a_lease_bounds_the_hold(dev_env: WorkflowEnvironment) -> None:
    client, resource = dev_env.client, a_resource()
    async with lock_worker(dev_env, LockConfig(check_seconds=3600, linger_seconds=0)) as (queue, _):
        holder = await hold(client, queue, resource, lease=1)
        await until(holder, holding)
        waiter = await hold(client, queue, resource)
        await until(waiter, holding)
        state = await lock_state(client, queue, resource, lambda s: True)
        assert any(e.what == "lease expired" and e.workflow_id == holder.id for e in state.recent)
        for handle in (holder, waiter):
            await handle.signal(LockHolderProbe.let_go)
            await handle.result()


async def test_continue_as_new_keeps_holder_and_queue(dev_env: WorkflowEnvironment) -> None:
    client, resource = dev_env.client, a_resource()
    async with lock_worker(
        dev_env, LockConfig(check_seconds=0.5, continue_after=2, linger_seconds=0)
    ) as (queue, _):
        holder = await hold(client, queue, resource)
        await until(holder, holding)
        first_run = (await client.get_workflow_handle(lock_id(queue, resource)).describe()).run_id
        waiters = []
        for _ in range(3):
            waiters.append(await hold(client, queue, resource))
            await until(waiters[-1], waiting)
        desc = await client.get_workflow_handle(lock_id(queue, resource)).describe()
        assert desc.run_id != first_run  # continued as new on the way
        state = await lock_state(client, queue, resource, lambda s: len(s.queue) == 3)
        assert state.holder and state.holder.request.workflow_id == holder.id
        for handle in (holder, *waiters):
            await until(handle, holding)
            await handle.signal(LockHolderProbe.let_go)
            await handle.result()
        lock = client.get_workflow_handle(lock_id(queue, resource))
        await keep_history(
            client.get_workflow_handle(lock.id, run_id=first_run), "lock_continued_as_new"
        )
        await lock.result()  # free and nobody waits: it ends
        await keep_history(lock, "lock_drained_and_ended")


async def test_a_free_lock_serves_the_next_request_then_ends(
    dev_env: WorkflowEnvironment,
) -> None:
    """Freed, the lock stays up a while: the next request meets the same run (no restart, no
    retry against a lock that is ending); left alone it ends, and a later request starts it
    again."""
    client, resource = dev_env.client, a_resource()
    async with lock_worker(dev_env, LockConfig(check_seconds=0.5, linger_seconds=3)) as (
        queue,
        _,
    ):
        lock = client.get_workflow_handle(lock_id(queue, resource))
        first = await hold(client, queue, resource)
        await until(first, holding)
        run_id = (await lock.describe()).run_id
        await first.signal(LockHolderProbe.let_go)
        await first.result()
        second = await hold(client, queue, resource)
        await until(second, holding)
        assert (await lock.describe()).run_id == run_id
        await second.signal(LockHolderProbe.let_go)
        await second.result()
        deadline = time.monotonic() + 60
        while (await lock.describe()).status != WorkflowExecutionStatus.COMPLETED:
            assert time.monotonic() < deadline, "the free lock never ended"
            await asyncio.sleep(0.2)
        third = await hold(client, queue, resource)
        await until(third, holding)
        assert (await lock.describe()).run_id != run_id
        await third.signal(LockHolderProbe.let_go)
        await third.result()


async def test_a_forged_grant_is_ignored(dev_env: WorkflowEnvironment) -> None:
    client, resource = dev_env.client, a_resource()
    async with lock_worker(dev_env) as (queue, _):
        holder = await hold(client, queue, resource)
        await until(holder, holding)
        waiter = await hold(client, queue, resource)
        await until(waiter, waiting)
        state = await lock_state(client, queue, resource, lambda s: len(s.queue) == 1)
        forged = LockGranted(
            resource=resource, request_id=state.queue[0].request_id, granted_at=datetime.now(UTC)
        )
        await waiter.signal("lock_granted", forged)
        status = await until(waiter, lambda s: any(x.outcome == "refused" for x in s.timeline))
        assert waiting(status)
        await holder.signal(LockHolderProbe.let_go)
        await until(waiter, holding)
        await waiter.signal(LockHolderProbe.let_go)
        await waiter.result()


async def test_several_resources_are_taken_in_one_order(dev_env: WorkflowEnvironment) -> None:
    """Two runs asking for the same two resources in opposite orders never deadlock."""
    client, a, b = dev_env.client, a_resource(), a_resource()
    async with lock_worker(dev_env) as (queue, _):
        left = [await hold(client, queue, a, b), await hold(client, queue, b, a)]
        while left:
            deadline = time.monotonic() + 30
            while not (ready := [h for h in left if holding(await until(h, lambda s: True))]):
                assert time.monotonic() < deadline, "neither run got both locks"
                await asyncio.sleep(0.1)
            await ready[0].signal(LockHolderProbe.let_go)
            await ready[0].result()
            timeline = (await until(ready[0], lambda s: True)).timeline
            locks = [s.name for s in timeline if s.name.startswith("lock ")]
            assert locks == [f"lock {r}" for r in sorted((a, b))]
            left.remove(ready[0])


async def test_runbook_locks_lists_holders_and_queues(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client, resource = dev_env.client, a_resource()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "RUNBOOK_STATE_DIR": str(tmp_path),  # no local stack's addresses
    }
    async with lock_worker(dev_env) as (queue, _):
        holder = await hold(client, queue, resource)
        await until(holder, holding)
        waiter = await hold(client, queue, resource)
        await until(waiter, waiting)
        shown = await runbook_locks(env, "--json")
        assert shown.returncode == 0, shown.stderr
        [row] = [r for r in json.loads(shown.stdout)["locks"] if r["resource"] == resource]
        assert row["lock"] == lock_id(queue, resource) and row["environment"] == "production"
        assert row["holder"]["workflow_id"] == holder.id
        assert row["holder"]["procedure"] == "lock-probe"
        assert [q["workflow_id"] for q in row["queue"]] == [waiter.id]
        text = await runbook_locks(env)
        assert f"production {resource}: held by {holder.id} since" in text.stdout
        assert f"1. {waiter.id} waiting" in text.stdout
        for handle in (holder, waiter):
            await until(handle, holding)
            await handle.signal(LockHolderProbe.let_go)
            await handle.result()


async def test_runbook_locks_names_a_lock_that_does_not_answer(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A held lock whose worker is gone is listed as not answering, and does not hang the
    listing of the others."""
    client, resource = dev_env.client, a_resource()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "RUNBOOK_STATE_DIR": str(tmp_path),
    }
    async with lock_worker(dev_env) as (queue, _):
        holder = await hold(client, queue, resource)
        await until(holder, holding)
    try:
        shown = await runbook_locks(env, "--json")
        assert shown.returncode == 0, shown.stderr
        rows = json.loads(shown.stdout)["locks"]
        [row] = [r for r in rows if r["lock"] == lock_id(queue, resource)]
        assert row["answering"] is False and row["holder"] is None
    finally:
        for workflow_id in (holder.id, lock_id(queue, resource)):
            await client.get_workflow_handle(workflow_id).terminate("test done")
