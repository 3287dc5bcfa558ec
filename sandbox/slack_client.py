"""Acting as Slack: the requests Slack sends the intake when a roster person clicks a button,
submits a modal or types `/runbook`, signed with the app's signing secret as Slack signs them
(v0: HMAC-SHA256 over `v0:<timestamp>:<body>`). For the demo, the tests and the benchmarks.

    slack = ActingSlack(intake_url, signing_secret, {"bob": "U0LBOB", ...})
    slack.click("bob", "runbook.approve", workflow_id)
    slack.submit("bob", "runbook.reject", workflow_id, {"reason": "not now"})
    slack.command("alice", "start db-failover P1")
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

_clicks = itertools.count(1)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, timestamp: float | None = None) -> dict[str, str]:
    stamp = str(int(time.time() if timestamp is None else timestamp))
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature(secret, stamp, body),
        "Content-Type": "application/x-www-form-urlencoded",
    }


def block_actions(user_id: str, action_id: str, workflow_id: str, channel: str) -> bytes:
    """A button click on the approval message (`value` is the workflow id)."""
    n = next(_clicks)
    payload = {
        "type": "block_actions",
        "user": {"id": user_id},
        "channel": {"id": channel},
        "trigger_id": f"{n}.{int(time.time())}.local",
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "value": workflow_id,
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def view_submission(
    user_id: str, callback_id: str, workflow_id: str, values: dict[str, str], view_id: str
) -> bytes:
    """A modal submitted: each value under its block id, as Slack nests them."""
    state = {
        name: {"value": {"type": "plain_text_input", "value": v}} for name, v in values.items()
    }
    payload = {
        "type": "view_submission",
        "user": {"id": user_id},
        "view": {
            "id": view_id,
            "hash": f"{time.time():.6f}",
            "callback_id": callback_id,
            "private_metadata": workflow_id,
            "state": {"values": state},
        },
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def slash_command(user_id: str, text: str, channel: str) -> bytes:
    n = next(_clicks)
    fields = {
        "command": "/runbook",
        "text": text,
        "user_id": user_id,
        "channel_id": channel,
        "trigger_id": f"{n}.{int(time.time())}.local",
    }
    return urlencode(fields).encode()


@dataclass
class ActingSlack:
    """Posts signed Slack requests to the intake for roster people."""

    intake_url: str
    signing_secret: str
    slack_ids: dict[str, str]  # roster name -> Slack user id
    channel: str = "C0RUNBOOKS"
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def post(self, path: str, body: bytes, timestamp: float | None = None) -> httpx.Response:
        headers = signed_headers(self.signing_secret, body, timestamp)
        return self.http.post(f"{self.intake_url}{path}", content=body, headers=headers)

    def click(self, person: str, action_id: str, workflow_id: str) -> httpx.Response:
        body = block_actions(self.slack_ids[person], action_id, workflow_id, self.channel)
        return self.post("/slack/interactions", body)

    def submit(
        self,
        person: str,
        callback_id: str,
        workflow_id: str,
        values: dict[str, str],
        view_id: str = "V0LOCAL",
    ) -> httpx.Response:
        body = view_submission(self.slack_ids[person], callback_id, workflow_id, values, view_id)
        return self.post("/slack/interactions", body)

    def command(self, person: str, text: str) -> httpx.Response:
        return self.post(
            "/slack/commands", slash_command(self.slack_ids[person], text, self.channel)
        )


def local_slack(intake_url: str, state_dir: Path) -> ActingSlack:
    """Acting as the local stack's Slack: its signing secret (the configured one, as the
    stack hands it to the intake, else the stack's own) and its people's Slack ids."""
    from stack.roster import LOCAL_SLACK_IDS, local_slack_app

    secret = (
        os.environ.get("SLACK_SIGNING_SECRET")
        or (local_slack_app(state_dir)["SLACK_SIGNING_SECRET"])
    )
    return ActingSlack(intake_url, secret, dict(LOCAL_SLACK_IDS))


def answers(sandbox_url: str, user_id: str) -> list[dict[str, Any]]:
    """The ephemeral messages the app sent `user_id` through the sandbox's Slack twin."""
    calls = httpx.get(f"{sandbox_url}/slack/api/calls", timeout=10).json()
    return [
        c["body"]
        for c in calls
        if c["method"] == "chat.postEphemeral" and c["body"].get("user") == user_id
    ]
