"""The approval message through a Slack app, end to end: a real worker with a bot token, the
dev server, the CLI, and the sandbox's Slack twin over HTTP. The message is posted with its
buttons, updated in place as the run moves, and the run's later messages go in its thread."""

import base64
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from activities.slack_app import APPROVE_ACTION, REJECT_ACTION
from settings import Settings
from tests.e2e.conftest import as_approver, cli, gate_open, replay_and_keep
from tests.temporal_env import eventually
from worker import build_worker

pytestmark = pytest.mark.timeout(240)

TOKEN = "xoxb-e2e-bot-token-that-must-stay-secret"
CHANNEL = "#ops-e2e"


@pytest.fixture(scope="module")
async def slack_worker(
    dev_env: WorkflowEnvironment, stack_env: dict[str, str], aws_env: dict[str, str]
) -> AsyncIterator[dict[str, str]]:
    """A game-day worker posting through the Slack app (the twin's Web API)."""
    env = {
        **stack_env,
        "RUNBOOK_TASK_QUEUE": f"e2e-slack-{time.monotonic_ns()}",
        "RUNBOOK_SLACK_CHANNEL": CHANNEL,
        "SLACK_API_URL": f"{stack_env['SANDBOX_URL']}/slack/api/",
    }
    settings = Settings.model_validate({**env, "SLACK_BOT_TOKEN": TOKEN, "RUNBOOK_GAME_DAY": "1"})
    async with httpx.AsyncClient() as http, build_worker(dev_env.client, settings, http):
        target = dev_env.client.service_client.config.target_host
        yield {**os.environ, **env, "TEMPORAL_ADDRESS": target}


@pytest.fixture
def twin(sandbox: httpx.Client, stack_env: dict[str, str]) -> Iterator[httpx.Client]:
    """The session's sandbox (reset, failovers healing in 2 s); its Slack twin takes TOKEN."""
    sandbox.post("/control/heal-delay", json={"seconds": 2}).raise_for_status()
    sandbox.post("/control/slack/token", json={"token": TOKEN}).raise_for_status()
    yield sandbox
    sandbox.post("/control/slack/token", json={"token": stack_env.get("SLACK_BOT_TOKEN")})


def top(twin: httpx.Client) -> dict[str, Any] | None:
    """The run's approval message as it is now (one run a test)."""
    found = [m for m in twin.get("/slack/api/messages").json() if m["thread_ts"] is None]
    return found[0] if found else None


def replies(twin: httpx.Client, message: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in twin.get("/slack/api/messages").json() if m["thread_ts"] == message["ts"]]


def buttons(message: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (e["action_id"], e.get("value", ""))
        for b in message["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e.get("action_id", "").startswith("runbook.")
    ]


def status_lines(message: dict[str, Any]) -> list[str]:
    return [e["text"] for b in message["blocks"] if b["type"] == "context" for e in b["elements"]]


def field(message: dict[str, Any], name: str) -> str:
    texts = [f["text"] for b in message["blocks"] for f in b.get("fields", [])]
    return next(t.split("\n", 1)[1] for t in texts if t.startswith(f"*{name}*"))


def decoded(node: Any) -> str:
    """Every payload of a history, decoded (the JSON export keeps them in base64)."""
    if isinstance(node, dict):
        data = node.get("data")
        own = base64.b64decode(data).decode(errors="replace") if isinstance(data, str) else ""
        return own + "".join(decoded(v) for k, v in node.items() if k != "data")
    if isinstance(node, list):
        return "".join(decoded(v) for v in node)
    return ""


async def posted(twin: httpx.Client, workflow_id: str) -> dict[str, Any]:
    async def ready() -> dict[str, Any] | None:
        return top(twin)

    message: dict[str, Any] = await eventually(ready, f"{workflow_id}: its message", 60, 0.2)
    return message


async def start(env: dict[str, str], *args: str, requester: str = "alice") -> str:
    started = await cli(env, "start", "db-failover", "--requested-by", requester, *args, "--json")
    assert started.returncode == 0, started.stderr
    return str(json.loads(started.stdout)["workflow_id"])


async def finished(env: dict[str, str], workflow_id: str) -> dict[str, Any]:
    done = await cli(env, "status", workflow_id, "--wait", "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


async def test_the_message_follows_an_approved_run_to_verified(
    slack_worker: dict[str, str],
    twin: httpx.Client,
    dev_env: WorkflowEnvironment,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="slack_sdk")  # its requests, headers included
    twin.post("/control/incidents/db-failover").raise_for_status()
    alice = as_approver(slack_worker, "alice")
    workflow_id = await start(alice, "--set", "poll_seconds=0.5")
    await gate_open(dev_env.client, workflow_id)

    message = await posted(twin, workflow_id)
    assert message["channel"] == CHANNEL
    assert buttons(message) == [(APPROVE_ACTION, workflow_id), (REJECT_ACTION, workflow_id)]
    shown = json.dumps(message["blocks"])
    assert "Key findings" in shown and "/health/detailed" in shown  # the diagnosis
    assert "Reboot prod-revenue-context-db with force-failover" in shown  # the plan
    assert field(message, "Level") == "on-call" and "UTC" in field(message, "Level ends")

    bob = as_approver(slack_worker, "bob")
    approved = await cli(bob, "approve", workflow_id, "--as", "bob", "--comment", "go")
    assert approved.returncode == 0, approved.stderr
    status = await finished(slack_worker, workflow_id)
    assert status["outcome"] == "completed"

    now = top(twin)
    assert now is not None and now["ts"] == message["ts"] and now["updates"] >= 1
    assert buttons(now) == []
    lines = status_lines(now)
    assert lines[0] == ":white_check_mark: Approved by bob: go"
    assert lines.index(":gear: Acting") < lines.index(":mag: Verifying") < len(lines) - 1
    assert lines[-1].startswith(":white_check_mark: Verified: db-failover done")
    assert now["text"].startswith(":white_check_mark:")  # the headline marks the end
    reply, draft = replies(twin, now)  # the result, then the incident log's post-mortem draft
    assert "db-failover done" in reply["text"] and "available on us-east-1b" in json.dumps(reply)
    assert "post-mortem draft" in draft["text"]

    history = await replay_and_keep(dev_env.client, workflow_id, "db_failover_slack_app_message")
    payloads = decoded(json.loads(history))
    assert message["ts"] in payloads and TOKEN not in payloads + history  # the ref, no token
    assert TOKEN not in json.dumps(status)
    assert "chat.update" in caplog.text and TOKEN not in caplog.text


async def test_an_unanswered_gate_escalates_in_place_then_times_out(
    slack_worker: dict[str, str], twin: httpx.Client, dev_env: WorkflowEnvironment
) -> None:
    workflow_id = await start(
        slack_worker, "--severity", "P1", "--set", "approval_timeout_seconds=1"
    )
    status = await finished(slack_worker, workflow_id)
    assert status["outcome"] == "not_approved"

    message = top(twin)
    assert message is not None and buttons(message) == []
    lines = status_lines(message)
    assert lines[0].startswith(":rotating_light: Escalated to engineering-manager until")
    assert lines[-2].startswith(":hourglass: No decision from on-call -> engineering-manager")
    assert lines[-1].startswith(":no_entry_sign: db-failover not run")
    last_level = lines[-3].split("Escalated to ", 1)[1].split(" until")[0]
    assert field(message, "Level") == last_level  # the fields follow the level
    thread = replies(twin, message)
    escalations = [r for r in thread if "ESCALATED" in r["text"]]
    assert escalations and all(r["reply_broadcast"] for r in escalations)
    assert "not run" in thread[-2]["text"] and not thread[-2]["reply_broadcast"]
    assert "post-mortem draft" in thread[-1]["text"]  # P1: the incident log's draft


async def test_a_rejection_shows_on_the_message_and_in_its_thread(
    slack_worker: dict[str, str], twin: httpx.Client, dev_env: WorkflowEnvironment
) -> None:
    # Nobody's key signs dave's start: an unproven P1 requester, so two people must approve.
    workflow_id = await start(slack_worker, requester="dave")
    await gate_open(dev_env.client, workflow_id)
    message = await posted(twin, workflow_id)
    bob, erin = as_approver(slack_worker, "bob"), as_approver(slack_worker, "erin")
    assert (
        await cli(bob, "approve", workflow_id, "--as", "bob", "--set", "override=healthy")
    ).returncode == 0

    async def first_approval_shown() -> dict[str, Any] | None:
        now = top(twin)
        return now if now and now["updates"] else None

    now = await eventually(first_approval_shown, "the first approval on the message", 60, 0.2)
    assert status_lines(now) == [":ballot_box_with_check: Approved by bob; waiting for 1 more"]
    assert buttons(now) == buttons(message)  # still open
    rejected = await cli(erin, "reject", workflow_id, "--as", "erin", "--reason", "not now")
    assert rejected.returncode == 0, rejected.stderr
    assert (await finished(slack_worker, workflow_id))["outcome"] == "rejected"

    now = top(twin)
    assert now is not None and now["ts"] == message["ts"] and buttons(now) == []
    assert status_lines(now)[1:] == [
        ":no_entry_sign: Rejected by erin: not now",
        ":no_entry_sign: db-failover not run for prod-revenue-context-db",
    ]
    reply = replies(twin, now)[0]
    assert "Rejected by erin: not now; nothing was changed" in json.dumps(reply)


async def test_slack_refusing_updates_is_recorded_and_the_run_goes_on(
    slack_worker: dict[str, str], twin: httpx.Client, dev_env: WorkflowEnvironment
) -> None:
    twin.post("/control/incidents/db-failover").raise_for_status()
    workflow_id = await start(as_approver(slack_worker, "alice"), "--set", "poll_seconds=0.5")
    await gate_open(dev_env.client, workflow_id)
    message = await posted(twin, workflow_id)
    twin.post("/control/slack/fail", json={"status": 200, "error": "channel_not_found"})

    bob = as_approver(slack_worker, "bob")
    assert (await cli(bob, "approve", workflow_id, "--as", "bob")).returncode == 0
    status = await finished(slack_worker, workflow_id)
    assert status["outcome"] == "completed"  # Slack never fails a runbook
    failed = {s["name"]: s["detail"] for s in status["timeline"] if s["outcome"] == "failed"}
    assert failed["notify update"] == "Slack chat.update answered 200: channel_not_found"
    assert "channel_not_found" in failed["notify resolved"]
    now = top(twin)
    assert now is not None and now["updates"] == 0 and buttons(now) == buttons(message)
