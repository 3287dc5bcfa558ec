"""A local PagerDuty Events API v2: validates events as PagerDuty does and keeps them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sandbox.replies import Reply, json_reply
from sandbox.state import SandboxState

ACTIONS = {"trigger", "acknowledge", "resolve"}


def enqueue(state: SandboxState, body: Any) -> Reply:
    """Events API v2: validates the fields PagerDuty rejects events without."""
    errors = _errors(body)
    if errors:
        payload = {"status": "invalid event", "message": "Event object is invalid"}
        return json_reply(400, {**payload, "errors": errors})
    dedup_key = body.get("dedup_key") or uuid.uuid4().hex
    with state.lock:
        state.pagerduty_events.append({**body, "dedup_key": dedup_key})
    return json_reply(
        202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
    )


def events(state: SandboxState, _: Any) -> Reply:
    with state.lock:
        return json_reply(200, list(state.pagerduty_events))


def clear(state: SandboxState, _: Any) -> Reply:
    with state.lock:
        state.pagerduty_events.clear()
    return json_reply(200, {"cleared": True})


def _errors(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["Event must be a JSON object."]
    errors = []
    if not body.get("routing_key"):
        errors.append("'routing_key' is missing or blank.")
    if body.get("event_action") not in ACTIONS:
        errors.append("'event_action' must be one of trigger, acknowledge, resolve.")
    if body.get("event_action") == "trigger":
        payload = body.get("payload") or {}
        for key in ("summary", "source", "severity"):
            if not payload.get(key):
                errors.append(f"'payload.{key}' is missing or blank.")
    elif body.get("event_action") in ACTIONS and not body.get("dedup_key"):
        errors.append("'dedup_key' is required for acknowledge and resolve.")
    return errors


ROUTES: dict[tuple[str, str], Callable[[SandboxState, Any], Reply]] = {
    ("POST", "/pagerduty/v2/enqueue"): enqueue,
    ("GET", "/pagerduty/events"): events,
    ("DELETE", "/pagerduty/events"): clear,
}
