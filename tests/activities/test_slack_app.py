"""The Slack app's activities against the sandbox's Slack twin over HTTP: the approval
message, its update in place, a thread reply; Slack's refusals typed for the retry policy;
the token in no error; without a bot token the webhook's message as it always was."""

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.notify import (
    Link,
    MessageUpdate,
    Notification,
    NotifyActivities,
    slack_blocks,
)
from activities.slack_app import APPROVE_ACTION, REJECT_ACTION, SlackApp

TOKEN = "xoxb-activity-test-token-that-must-stay-secret"
WORKFLOW_ID = "db-failover/production/prod-revenue-context-db"
REQUEST = Notification(
    kind="approval_request",
    title="db-failover: approval needed for prod-revenue-context-db",
    severity="P1",
    text="Fail prod-revenue-context-db over\n• Reboot with force-failover",
    fields={"Level": "on-call", "Level ends": "2026-11-28 12:00 UTC"},
    findings=["/health/detailed: failing: HTTP 503"],
)


@pytest.fixture
def twin(sandbox: httpx.Client, stack_env: dict[str, str]) -> Iterator[httpx.Client]:
    """The session's sandbox; its Slack twin takes only TOKEN while the test runs."""
    sandbox.post("/control/slack/token", json={"token": TOKEN}).raise_for_status()
    yield sandbox
    sandbox.post("/control/slack/token", json={"token": stack_env.get("SLACK_BOT_TOKEN")})


def acts(sandbox: httpx.Client, http: httpx.AsyncClient, token: str = TOKEN) -> NotifyActivities:
    app = SlackApp(token, f"{sandbox.base_url}/slack/api", "#ops")
    dashboards = [Link(label="Grafana", url="https://grafana.example/d/x")]
    return NotifyActivities(None, http, "http://ui", dashboards, slack_app=app)


def in_run() -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = replace(env.info, workflow_id=WORKFLOW_ID, workflow_run_id="run-1")
    return env


def actions(message: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [
        (e.get("action_id", ""), e.get("value"))
        for b in message["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e.get("action_id", "").startswith("runbook.")
    ]


async def test_the_approval_message_is_posted_updated_in_place_and_replied_to(
    twin: httpx.Client,
) -> None:
    async with httpx.AsyncClient() as http:
        notify = acts(twin, http)
        posted = await in_run().run(notify.slack, REQUEST)
        assert posted.delivered and posted.message is not None
        (message,) = twin.get("/slack/api/messages").json()
        assert message["ts"] == posted.message.ts and message["channel"] == "#ops"
        assert actions(message) == [(APPROVE_ACTION, WORKFLOW_ID), (REJECT_ACTION, WORKFLOW_ID)]
        shown = json.dumps(message["blocks"])
        assert "Key findings" in shown and "HTTP 503" in shown and "Level ends" in shown

        lines = [":white_check_mark: Approved by bob: go", ":gear: Acting"]
        update = MessageUpdate(ref=posted.message, note=REQUEST, status=lines, open=False)
        updated = await in_run().run(notify.slack_update, update)
        assert updated.delivered
        reply = REQUEST.model_copy(
            update={"kind": "resolved", "title": "done", "thread": posted.message}
        )
        await in_run().run(notify.slack, reply)

    top, answer = twin.get("/slack/api/messages").json()
    assert top["ts"] == message["ts"] and top["updates"] == 1
    assert actions(top) == []  # decided: the buttons are gone
    assert all(line in json.dumps(top["blocks"]) for line in lines)
    assert answer["thread_ts"] == top["ts"] and answer["reply_broadcast"] is False
    assert actions(answer) == []  # a reply has no buttons, only links
    assert len(twin.get("/slack/messages").json()) == 2  # the twin's list, as before


@pytest.mark.parametrize(
    ("failure", "retryable", "said"),
    [
        ({"status": 503}, True, "answered 503: internal_error"),
        ({"status": 429}, True, "answered 429"),
        ({"status": 200, "error": "ratelimited"}, True, "answered 200: ratelimited"),
        ({"status": 200, "error": "channel_not_found"}, False, "channel_not_found"),
    ],
)
async def test_slack_refusals_are_typed_for_the_retry_policy(
    twin: httpx.Client, failure: dict[str, Any], retryable: bool, said: str
) -> None:
    twin.post("/control/slack/fail", json=failure).raise_for_status()
    async with httpx.AsyncClient() as http:
        with pytest.raises(ApplicationError) as raised:
            await in_run().run(acts(twin, http).slack, REQUEST)
    assert raised.value.non_retryable is not retryable
    assert said in str(raised.value) and TOKEN not in str(raised.value)
    assert twin.get("/slack/api/messages").json() == []


async def test_a_wrong_token_is_refused_for_good_and_never_shown(twin: httpx.Client) -> None:
    wrong = "xoxb-a-wrong-token-that-must-stay-secret"
    async with httpx.AsyncClient() as http:
        with pytest.raises(ApplicationError) as raised:
            await in_run().run(acts(twin, http, wrong).slack, REQUEST)
    assert raised.value.non_retryable and "invalid_auth" in str(raised.value)
    assert wrong not in str(raised.value) and TOKEN not in str(raised.value)
    assert twin.get("/slack/api/messages").json() == []


async def test_slack_unreachable_is_retried_without_its_address() -> None:
    async with httpx.AsyncClient() as http:
        app = SlackApp(TOKEN, "http://127.0.0.1:9/slack/api/", "#ops")
        notify = NotifyActivities(None, http, "http://ui", [], slack_app=app)
        with pytest.raises(ApplicationError) as raised:
            await in_run().run(notify.slack, REQUEST)
    assert not raised.value.non_retryable and "unreachable" in str(raised.value)
    assert "127.0.0.1" not in str(raised.value) and TOKEN not in str(raised.value)


async def test_without_a_bot_token_the_webhook_message_is_unchanged(twin: httpx.Client) -> None:
    webhook = f"{twin.base_url}/slack/webhook"
    async with httpx.AsyncClient() as http:
        notify = NotifyActivities(webhook, http, "http://ui", [], slack_channel="#ops")
        sent = await in_run().run(notify.slack, REQUEST)
        assert sent.delivered and sent.message is None
        update = await in_run().run(
            notify.slack_update,
            MessageUpdate(ref={"channel": "#ops", "ts": "1.000001"}, note=REQUEST),
        )
    assert not update.delivered and "SLACK_BOT_TOKEN" in update.detail
    (body,) = twin.get("/slack/messages").json()
    expected = slack_blocks(REQUEST.model_copy(update={"links": [body_link(body)]}))
    assert body == {**expected, "channel": "#ops"}  # no findings, no buttons: as before
    assert twin.get("/slack/api/messages").json() == []


def body_link(body: dict[str, Any]) -> Link:
    (button,) = body["blocks"][-1]["elements"]
    return Link(label=button["text"]["text"], url=button["url"])
