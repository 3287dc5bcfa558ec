"""A local Slack: an incoming webhook and the Web API's chat calls of a Slack app, keeping
what they receive, and able to fail."""

from __future__ import annotations

import hmac
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    """`status`: the webhook's and the Web API's HTTP status (200: healthy); `error`: an
    `ok: false` error code the Web API answers with (null: none)."""
    status = field(body, "status", int)
    if not 200 <= status <= 599:
        raise BadRequest("status must be an HTTP status between 200 and 599")
    error = body.get("error")
    if error is not None and not (isinstance(error, str) and ERROR_CODE.fullmatch(error)):
        raise BadRequest("error must be a Slack error code such as channel_not_found, or null")
    with state.lock:
        state.slack_fail_status = status
        state.slack_api_error = error
    return json_reply(200, {"slack_fail_status": status, "slack_api_error": error})


# ----- the Web API of a Slack app (chat.postMessage, chat.update) -------------------------

API = "/slack/api/"
ERROR_CODE = re.compile(r"[a-z_]{1,60}")
_SEQUENCE = itertools.count(1)


@dataclass
class ApiCall:
    """A Web API request: its Authorization header beside its JSON body."""

    authorization: str
    body: Any


def _refusal(state: SandboxState, call: ApiCall) -> Reply | None:
    """Slack's answer to a call that is not taken (caller holds the lock)."""
    if state.slack_fail_status != 200:
        state.slack_rejected += 1
        return json_reply(state.slack_fail_status, {"ok": False, "error": "internal_error"})
    token = state.slack_bot_token
    given = call.authorization.removeprefix("Bearer ")
    if token is not None and not hmac.compare_digest(given.encode(), token.encode()):
        return json_reply(200, {"ok": False, "error": "invalid_auth"})
    if state.slack_api_error:
        state.slack_rejected += 1
        return json_reply(200, {"ok": False, "error": state.slack_api_error})
    if not isinstance(call.body, dict) or not isinstance(call.body.get("channel"), str):
        return json_reply(200, {"ok": False, "error": "channel_not_found"})
    return None


def post_message(state: SandboxState, call: ApiCall) -> Reply:
    """chat.postMessage: kept by ts (and in the webhook's list, as Slack shows it)."""
    with state.lock:
        if refused := _refusal(state, call):
            return refused
        body = call.body
        ts = f"{int(time.time())}.{next(_SEQUENCE):06d}"
        thread_ts = body.get("thread_ts")
        if thread_ts is not None and thread_ts not in state.slack_app_messages:
            return json_reply(200, {"ok": False, "error": "thread_not_found"})
        message = {
            "channel": body["channel"],
            "ts": ts,
            "thread_ts": thread_ts,
            "reply_broadcast": bool(body.get("reply_broadcast")),
            "text": body.get("text", ""),
            "blocks": body.get("blocks", []),
            "updates": 0,
        }
        state.slack_app_messages[ts] = message
        state.slack_messages.append(body)
    return json_reply(200, {"ok": True, "channel": body["channel"], "ts": ts, "message": message})


def update_message(state: SandboxState, call: ApiCall) -> Reply:
    """chat.update: the message at `ts` now has the new text and blocks."""
    with state.lock:
        if refused := _refusal(state, call):
            return refused
        body = call.body
        message = state.slack_app_messages.get(body.get("ts"))
        if message is None or message["channel"] != body["channel"]:
            return json_reply(200, {"ok": False, "error": "message_not_found"})
        message.update(text=body.get("text", message["text"]), blocks=body.get("blocks", []))
        message["updates"] += 1
        answer = {"ok": True, "channel": message["channel"], "ts": message["ts"]}
    return json_reply(200, {**answer, "text": message["text"]})


def app_messages(state: SandboxState, _: Any) -> Reply:
    """Every app message as it is now (after its updates), in the order posted."""
    with state.lock:
        return json_reply(200, list(state.slack_app_messages.values()))


def set_token(state: SandboxState, body: Any) -> Reply:
    """The bot token the Web API accepts (null: any; at start: SLACK_BOT_TOKEN's)."""
    token = body.get("token") if isinstance(body, dict) else None
    if token is not None and not (isinstance(token, str) and 0 < len(token) <= 200):
        raise BadRequest("token must be a string of 1-200 characters, or null")
    with state.lock:
        state.slack_bot_token = token
    return json_reply(200, {"token_set": token is not None})


ROUTES: dict[tuple[str, str], Callable[[SandboxState, Any], Reply]] = {
    ("POST", "/slack/webhook"): webhook,
    ("GET", "/slack/messages"): messages,
    ("DELETE", "/slack/messages"): clear,
    ("POST", "/control/slack/fail"): fail,
    ("POST", API + "chat.postMessage"): post_message,
    ("POST", API + "chat.update"): update_message,
    ("GET", API + "messages"): app_messages,
    ("POST", "/control/slack/token"): set_token,
}
