"""What the sandbox's HTTP API answers, and the bad requests it refuses with a 4xx."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JSON = "application/json"


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = JSON


def json_reply(status: int, payload: Any) -> Reply:
    return Reply(status, json.dumps(payload).encode())


class BadRequest(Exception):
    """Answered `{"error": <message>}` with `status` (400 unless said), nothing changed."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def field(body: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    """A required numeric field of a JSON object body."""
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadRequest(f"body must be a JSON object with a numeric {name!r}")
    return value


def number(body: Any, name: str) -> float | None:
    """An optional number >= 0 of a JSON object body."""
    value = body.get(name) if isinstance(body, dict) else None
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"{name} must be a number >= 0")
    return float(value)


def numbers(body: Any, **defaults: float) -> dict[str, Any]:
    """Numbers >= 0 of a JSON object body; a missing or invalid one takes its default."""
    given = body if isinstance(body, dict) else {}
    values: dict[str, Any] = {}
    for name, default in defaults.items():
        value = given.get(name, default)
        if not isinstance(value, int | float) or value < 0:
            value = default
        values[name] = value
    return values
