"""The Slack app message of a run that waits for its lock, and of one whose action fails:
fake AWS, the real lock workflow, the real Slack activities against the sandbox's Slack twin
over HTTP."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from activities.notify import NotifyActivities
from activities.slack_app import SlackApp
from tests.fakes.approvers import signed
from tests.fakes.locking import HoldInput, LockHolderProbe
from tests.fakes.systems import FakeSystems, activity_name
from tests.temporal_env import eventually, gate_open, running, start, until
from workflows.db_failover import DatabaseFailover, DbFailoverInput
from workflows.lock import rds_instance

pytestmark = pytest.mark.timeout(120)

TOKEN = "xoxb-workflow-test-token-that-must-stay-secret"


@pytest.fixture
def twin(sandbox: httpx.Client, stack_env: dict[str, str]) -> Iterator[httpx.Client]:
    sandbox.post("/control/slack/token", json={"token": TOKEN}).raise_for_status()
    yield sandbox
    sandbox.post("/control/slack/token", json={"token": stack_env.get("SLACK_BOT_TOKEN")})


def with_slack_app(fakes: FakeSystems, twin: httpx.Client, http: httpx.AsyncClient) -> list[Any]:
    """The fakes' activities, Slack's the real ones through the Slack app."""
    app = SlackApp(TOKEN, f"{twin.base_url}/slack/api/", "#ops")
    notify = NotifyActivities(None, http, "http://ui", [], slack_app=app)
    activities = [a for a in fakes.activities() if activity_name(a) != "notify.slack"]
    return [*activities, notify.slack, notify.slack_update]


def lines_of(message: dict[str, Any]) -> list[str]:
    return [e["text"] for b in message["blocks"] if b["type"] == "context" for e in b["elements"]]


def the_run_message(twin: httpx.Client) -> dict[str, Any] | None:
    found = [
        m
        for m in twin.get("/slack/api/messages").json()
        if m["thread_ts"] is None and "db-failover" in m["text"]
    ]
    return found[0] if found else None


async def test_a_wait_for_the_lock_shows_on_the_message(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path], twin: httpx.Client
) -> None:
    resource = rds_instance("prod-revenue-context-db")
    async with (
        httpx.AsyncClient() as http,
        running(
            ts_env,
            [DatabaseFailover, LockHolderProbe],
            with_slack_app(FakeSystems(roster), twin, http),
        ) as queue,
    ):
        holder = await ts_env.client.start_workflow(
            LockHolderProbe.run, HoldInput(resources=[resource]), id="probe/rds", task_queue=queue
        )
        await until(holder, lambda s: s.phase == "holding")
        handle = await start(ts_env, queue, DbFailoverInput(requested_by="alice"))
        await until(handle, gate_open)
        await handle.execute_update(DatabaseFailover.approve, await signed(handle, "bob"))

        async def waiting() -> list[str] | None:
            message = the_run_message(twin)
            lines = lines_of(message) if message else []
            return lines if any(line.startswith(":lock:") for line in lines) else None

        lines = await eventually(waiting, "the lock wait on the message", 60, 0.2)
        assert lines[-1].startswith(f":lock: Waiting for lock {resource} (")
        await holder.signal(LockHolderProbe.let_go)
        assert (await handle.result()).outcome == "completed"
    message = the_run_message(twin)
    assert message is not None
    lines = lines_of(message)
    assert lines.index(":gear: Acting") > max(i for i, ln in enumerate(lines) if "lock" in ln)


async def test_a_failed_action_marks_the_message_and_replies_in_its_thread(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path], twin: httpx.Client
) -> None:
    fakes = FakeSystems(roster, failover_error="RDS said no")
    async with (
        httpx.AsyncClient() as http,
        running(ts_env, [DatabaseFailover], with_slack_app(fakes, twin, http)) as queue,
    ):
        handle = await start(ts_env, queue, DbFailoverInput(requested_by="alice"))
        await until(handle, gate_open)
        await handle.execute_update(DatabaseFailover.approve, await signed(handle, "bob"))
        with pytest.raises(WorkflowFailureError):
            await handle.result()

    message, *thread = twin.get("/slack/api/messages").json()
    lines = lines_of(message)
    assert lines[0].startswith(":white_check_mark: Approved by bob")
    assert lines[1:] == [":gear: Acting", ":x: db-failover FAILED for prod-revenue-context-db"]
    assert message["text"].startswith(":x:") and '"runbook.approve"' not in json.dumps(message)
    failed = [m for m in thread if m["thread_ts"] == message["ts"] and "FAILED" in m["text"]]
    assert len(failed) == 1 and "RDS said no" in json.dumps(failed[0]["blocks"])


async def test_the_run_acts_without_waiting_for_a_slow_slack(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path], twin: httpx.Client
) -> None:
    """Slack's chat.update held for 8 s: the failover is started while the message's first
    update is still on its way (the updates have a task of their own)."""
    fakes = FakeSystems(roster)
    async with (
        httpx.AsyncClient() as http,
        running(ts_env, [DatabaseFailover], with_slack_app(fakes, twin, http)) as queue,
    ):
        handle = await start(ts_env, queue, DbFailoverInput(requested_by="alice"))
        await until(handle, gate_open)
        twin.post("/control/latency", json={"/slack/api/chat.update": 8}).raise_for_status()
        await handle.execute_update(DatabaseFailover.approve, await signed(handle, "bob"))

        async def failed_over() -> bool:
            return "force_failover" in fakes.calls

        await eventually(failed_over, "the failover", 60, 0.1)
        twin.delete("/control/latency").raise_for_status()
        assert (await handle.result()).outcome == "completed"
        history = await handle.fetch_history()

    names: dict[int, str] = {}
    order: list[str] = []  # "scheduled <activity>" / "completed <activity>", as they happened
    for e in history.events:
        if e.HasField("activity_task_scheduled_event_attributes"):
            names[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
            order.append(f"scheduled {names[e.event_id]}")
        elif e.HasField("activity_task_completed_event_attributes"):
            done = e.activity_task_completed_event_attributes.scheduled_event_id
            order.append(f"completed {names[done]}")
    update, failover = "notify.slack_update", "rds.force_failover"
    assert order.index(f"scheduled {update}") < order.index(f"scheduled {failover}")
    assert order.index(f"scheduled {failover}") < order.index(f"completed {update}")
