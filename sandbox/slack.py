"""A local Slack: an incoming webhook that keeps what it receives, and can be made to fail;
and the Web API calls the Slack app makes (`POST /slack/api/<method>`), each kept with its
method name for GET /slack/api/calls. A call needs the bot token the sandbox was given
(SLACK_BOT_TOKEN) as `Authorization: Bearer`, and is answered like Slack: `{"ok": ...}`."""

from __future__ import annotations

import hmac
import itertools
import time
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


API_PREFIX = "/slack/api/"
_ids = itertools.count(1)


def web_api(state: SandboxState, path: str, authorization: str | None, body: Any) -> Reply:
    """One Web API call: the token checked, the call kept, the method's answer."""
    method = path.removeprefix(API_PREFIX)
    token = (authorization or "").removeprefix("Bearer ").strip()
    with state.lock:
        expected = state.slack_bot_token
    if not token:
        return json_reply(200, {"ok": False, "error": "not_authed"})
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        return json_reply(200, {"ok": False, "error": "invalid_auth"})
    answer = API_METHODS.get(method)
    if answer is None:
        return json_reply(404, {"ok": False, "error": "unknown_method"})
    if not isinstance(body, dict):
        return json_reply(200, {"ok": False, "error": "invalid_arguments"})
    reply = answer(body)
    if reply.get("ok"):
        with state.lock:
            state.slack_calls.append({"method": method, "body": body, "reply": reply})
    return json_reply(200, reply)


def _missing(body: dict[str, Any], *names: str) -> dict[str, Any] | None:
    if absent := [n for n in names if not body.get(n)]:
        return {"ok": False, "error": "invalid_arguments", "missing": absent}
    return None


def post_ephemeral(body: dict[str, Any]) -> dict[str, Any]:
    """Seen only by `user` in `channel`."""
    if refusal := _missing(body, "channel", "user"):
        return refusal
    if not body.get("text") and not body.get("blocks"):
        return {"ok": False, "error": "no_text"}
    return {"ok": True, "message_ts": f"{time.time():.6f}"}


def views_open(body: dict[str, Any]) -> dict[str, Any]:
    """A modal opened for the user whose click gave the trigger id."""
    if refusal := _missing(body, "trigger_id", "view"):
        return refusal
    view = body["view"]
    if not isinstance(view, dict) or view.get("type") != "modal":
        return {"ok": False, "error": "invalid_arguments"}
    return {"ok": True, "view": {**view, "id": f"V{next(_ids):08d}"}}


API_METHODS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "chat.postEphemeral": post_ephemeral,
    "views.open": views_open,
}


def calls(state: SandboxState, _: Any) -> Reply:
    with state.lock:
        return json_reply(200, list(state.slack_calls))


def messages(state: SandboxState, _: Any) -> Reply:
    with state.lock:
        return json_reply(200, list(state.slack_messages))


def clear(state: SandboxState, _: Any) -> Reply:
    with state.lock:
        state.slack_messages.clear()
        state.slack_calls.clear()
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
    ("GET", "/slack/api/calls"): calls,
    ("POST", "/control/slack/fail"): fail,
}
