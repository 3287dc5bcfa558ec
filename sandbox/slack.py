"""A local Slack: an incoming webhook that keeps what it receives, and can be made to fail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.replies import BadRequest, Reply, field, json_reply
from sandbox.state import SandboxState


def webhook(state: SandboxState, body: Any) -> Reply:
    """Answers like Slack's incoming webhooks: plain text `ok`, or an error status."""
    with state.lock:
        if state.slack_fail_status != 200:
            state.slack_rejected += 1
            return Reply(state.slack_fail_status, b"internal_error", "text/plain")
        if not isinstance(body, dict):
            return Reply(400, b"invalid_payload", "text/plain")
        state.slack_messages.append(body)
    return Reply(200, b"ok", "text/plain")


def messages(state: SandboxState, _: Any) -> Reply:
    with state.lock:
        return json_reply(200, list(state.slack_messages))


def clear(state: SandboxState, _: Any) -> Reply:
    with state.lock:
        state.slack_messages.clear()
    return json_reply(200, {"cleared": True})


def fail(state: SandboxState, body: Any) -> Reply:
    status = field(body, "status", int)
    if not 200 <= status <= 599:
        raise BadRequest("status must be an HTTP status between 200 and 599")
    with state.lock:
        state.slack_fail_status = status
    return json_reply(200, {"slack_fail_status": status})


ROUTES: dict[tuple[str, str], Callable[[SandboxState, Any], Reply]] = {
    ("POST", "/slack/webhook"): webhook,
    ("GET", "/slack/messages"): messages,
    ("DELETE", "/slack/messages"): clear,
    ("POST", "/control/slack/fail"): fail,
}
