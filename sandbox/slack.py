"""A local Slack: an incoming webhook, and the Web API calls a Slack app makes (`POST
/slack/api/<method>`: chat.postMessage, chat.update, chat.postEphemeral, views.open), keeping
what they receive (GET /slack/messages, /slack/api/messages, /slack/api/calls), and able to
fail. A Web API call needs the bot token the sandbox was given (SLACK_BOT_TOKEN) as
`Authorization: Bearer`, and is answered like Slack: `{"ok": ...}`."""

from __future__ import annotations

import hmac
import itertools
import re
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


def messages(state: SandboxState, _: Any) -> Reply:
    with state.lock:
        return json_reply(200, list(state.slack_messages))


def clear(state: SandboxState, _: Any) -> Reply:
    with state.lock:
        state.slack_messages.clear()
        state.slack_calls.clear()
        state.slack_app_messages.clear()
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


# ----- the Web API of a Slack app ---------------------------------------------------------

API_PREFIX = "/slack/api/"
ERROR_CODE = re.compile(r"[a-z_]{1,60}")
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
    with state.lock:
        if state.slack_fail_status != 200:  # Slack down (/control/slack/fail)
            state.slack_rejected += 1
            return json_reply(state.slack_fail_status, {"ok": False, "error": "internal_error"})
        if state.slack_api_error:  # Slack refusing (/control/slack/fail with an error)
            state.slack_rejected += 1
            return json_reply(200, {"ok": False, "error": state.slack_api_error})
        reply = answer(state, body)
        if reply.get("ok"):
            state.slack_calls.append({"method": method, "body": body, "reply": reply})
    return json_reply(200, reply)


def _missing(body: dict[str, Any], *names: str) -> dict[str, Any] | None:
    if absent := [n for n in names if not body.get(n)]:
        return {"ok": False, "error": "invalid_arguments", "missing": absent}
    return None


def post_message(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    """chat.postMessage: kept by ts (and in the webhook's list, as Slack shows it)."""
    if not isinstance(body.get("channel"), str):
        return {"ok": False, "error": "channel_not_found"}
    thread_ts = body.get("thread_ts")
    if thread_ts is not None and thread_ts not in state.slack_app_messages:
        return {"ok": False, "error": "thread_not_found"}
    ts = f"{int(time.time())}.{next(_ids):06d}"
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
    return {"ok": True, "channel": body["channel"], "ts": ts, "message": dict(message)}


def update_message(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    """chat.update: the message at `ts` now has the new text and blocks."""
    if not isinstance(body.get("channel"), str):
        return {"ok": False, "error": "channel_not_found"}
    message = state.slack_app_messages.get(body.get("ts"))  # type: ignore[arg-type]
    if message is None or message["channel"] != body["channel"]:
        return {"ok": False, "error": "message_not_found"}
    message.update(text=body.get("text", message["text"]), blocks=body.get("blocks", []))
    message["updates"] += 1
    return {"ok": True, "channel": message["channel"], "ts": message["ts"], "text": message["text"]}


def post_ephemeral(_: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    """Seen only by `user` in `channel`."""
    if refusal := _missing(body, "channel", "user"):
        return refusal
    if not body.get("text") and not body.get("blocks"):
        return {"ok": False, "error": "no_text"}
    return {"ok": True, "message_ts": f"{time.time():.6f}"}


def views_open(_: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    """A modal opened for the user whose click gave the trigger id."""
    if refusal := _missing(body, "trigger_id", "view"):
        return refusal
    view = body["view"]
    if not isinstance(view, dict) or view.get("type") != "modal":
        return {"ok": False, "error": "invalid_arguments"}
    return {"ok": True, "view": {**view, "id": f"V{next(_ids):08d}"}}


API_METHODS: dict[str, Callable[[SandboxState, dict[str, Any]], dict[str, Any]]] = {
    "chat.postMessage": post_message,
    "chat.update": update_message,
    "chat.postEphemeral": post_ephemeral,
    "views.open": views_open,
}


def calls(state: SandboxState, _: Any) -> Reply:
    with state.lock:
        return json_reply(200, list(state.slack_calls))


def app_messages(state: SandboxState, _: Any) -> Reply:
    """Every app message as it is now (after its updates), in the order posted."""
    with state.lock:
        return json_reply(200, list(state.slack_app_messages.values()))


def set_token(state: SandboxState, body: Any) -> Reply:
    """The bot token the Web API takes (at start: SLACK_BOT_TOKEN's; null: none)."""
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
    ("GET", "/slack/api/calls"): calls,
    ("GET", API_PREFIX + "messages"): app_messages,
    ("POST", "/control/slack/token"): set_token,
}
