"""The sandbox's Slack Web API twin, called as the app calls it: with slack-sdk's client."""

from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tests.sandbox.test_sandbox import Sandbox, run_sandbox

TOKEN = "xoxb-twin-test"


@pytest.fixture(scope="module")
def twin() -> Iterator[Sandbox]:
    with run_sandbox(moto=False, SLACK_BOT_TOKEN=TOKEN) as sandbox:
        yield sandbox


def web(sandbox: Sandbox, token: str = TOKEN) -> WebClient:
    return WebClient(token=token, base_url=f"{sandbox.http.base_url}/slack/api/")


def test_ephemeral_messages_and_modals_are_answered_and_kept(twin: Sandbox) -> None:
    twin.http.delete("/slack/messages")
    sent = web(twin).chat_postEphemeral(channel="C1", user="U0BOB", text="refused: why")
    assert sent["ok"] and sent["message_ts"]
    view = {
        "type": "modal",
        "callback_id": "runbook.reject",
        "title": {"type": "plain_text", "text": "Reject"},
        "private_metadata": "db-failover/production/db-1",
        "blocks": [],
    }
    opened = web(twin).views_open(trigger_id="123.456", view=view)
    assert opened["view"]["id"].startswith("V")
    assert opened["view"]["private_metadata"] == "db-failover/production/db-1"
    calls = twin.http.get("/slack/api/calls").json()
    assert [c["method"] for c in calls] == ["chat.postEphemeral", "views.open"]
    assert calls[0]["body"]["user"] == "U0BOB"
    twin.http.delete("/slack/messages")
    assert twin.http.get("/slack/api/calls").json() == []


@pytest.mark.parametrize(("token", "error"), [("xoxb-wrong", "invalid_auth"), ("", "not_authed")])
def test_a_wrong_or_missing_token_is_refused_like_slack(
    twin: Sandbox, token: str, error: str
) -> None:
    with pytest.raises(SlackApiError) as refused:
        web(twin, token).chat_postEphemeral(channel="C1", user="U0BOB", text="x")
    assert refused.value.response["error"] == error
    assert twin.http.get("/slack/api/calls").json() == []


def test_a_call_without_what_slack_requires_is_refused(twin: Sandbox) -> None:
    with pytest.raises(SlackApiError) as refused:
        web(twin).views_open(trigger_id="", view={"type": "modal"})
    assert refused.value.response["error"] == "invalid_arguments"
