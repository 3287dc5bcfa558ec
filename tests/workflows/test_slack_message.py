"""The Slack app message of a run whose action fails: fake AWS (the failover refused), the
real Slack activities against the sandbox's Slack twin over HTTP."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from activities.notify import NotifyActivities
from activities.slack_app import SlackApp
from tests.fakes.approvers import signed
from tests.fakes.systems import FakeSystems, activity_name
from tests.temporal_env import gate_open, running, start, until
from workflows.db_failover import DatabaseFailover, DbFailoverInput

pytestmark = pytest.mark.timeout(120)

TOKEN = "xoxb-workflow-test-token-that-must-stay-secret"


@pytest.fixture
def twin(sandbox: httpx.Client, stack_env: dict[str, str]) -> Iterator[httpx.Client]:
    sandbox.post("/control/slack/token", json={"token": TOKEN}).raise_for_status()
    yield sandbox
    sandbox.post("/control/slack/token", json={"token": stack_env.get("SLACK_BOT_TOKEN")})


async def test_a_failed_action_marks_the_message_and_replies_in_its_thread(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path], twin: httpx.Client
) -> None:
    fakes = FakeSystems(roster, failover_error="RDS said no")
    async with httpx.AsyncClient() as http:
        app = SlackApp(TOKEN, f"{twin.base_url}/slack/api/", "#ops")
        notify = NotifyActivities(None, http, "http://ui", [], slack_app=app)
        activities = [a for a in fakes.activities() if activity_name(a) != "notify.slack"]
        activities += [notify.slack, notify.slack_update]
        async with running(ts_env, [DatabaseFailover], activities) as queue:
            handle = await start(ts_env, queue, DbFailoverInput(requested_by="alice"))
            await until(handle, gate_open)
            await handle.execute_update(DatabaseFailover.approve, await signed(handle, "bob"))
            with pytest.raises(WorkflowFailureError):
                await handle.result()

    message, *thread = twin.get("/slack/api/messages").json()
    lines = [e["text"] for b in message["blocks"] if b["type"] == "context" for e in b["elements"]]
    assert lines[0].startswith(":white_check_mark: Approved by bob")
    assert lines[1:] == [":gear: Acting", ":x: db-failover FAILED for prod-revenue-context-db"]
    assert message["text"].startswith(":x:") and '"runbook.approve"' not in json.dumps(message)
    failed = [m for m in thread if m["thread_ts"] == message["ts"] and "FAILED" in m["text"]]
    assert len(failed) == 1 and "RDS said no" in json.dumps(failed[0]["blocks"])
