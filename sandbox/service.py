"""The sandbox's HTTP API: the service's endpoints, local Slack / PagerDuty, control."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from sandbox.diagnosis import ROUTES as DIAGNOSIS_ROUTES
from sandbox.diagnosis import DiagnosisSandbox
from sandbox.remediation import ROUTES as REMEDIATION_ROUTES
from sandbox.remediation import Remediation
from sandbox.simulator import Simulator

JSON = "application/json"
# Paths of the simulated service itself; the rest is harness and stays out of its metrics.
HARNESS_PREFIXES = ("/control/", "/slack/", "/pagerduty/")
PAGERDUTY_ACTIONS = {"trigger", "acknowledge", "resolve"}


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = JSON


def json_reply(status: int, payload: Any) -> Reply:
    return Reply(status, json.dumps(payload).encode())


class BadRequest(Exception):
    pass


Route = Callable[[Simulator, Any], Reply]


def health(sim: Simulator, _: Any) -> Reply:
    # The image tag `api` runs (it changes with a rollback), once ECS is simulated;
    # 503 `degraded` while a bad deploy runs (sandbox/rollback.py).
    version = sim.remediation.version() or sim.state.version
    return json_reply(*sim.remediation.bad_deploy.health(sim.remediation, version))


def health_detailed(sim: Simulator, _: Any) -> Reply:
    status, body = sim.detailed_health()
    # The certificate the ALB's HTTPS listener serves (cert-renewal changes it).
    tls = sim.remediation.certificates.served()
    return json_reply(status, {**body, "tls": tls} if tls else body)


def metrics(sim: Simulator, _: Any) -> Reply:
    return Reply(200, sim.metrics.render(), CONTENT_TYPE_LATEST)


def slack_webhook(sim: Simulator, body: Any) -> Reply:
    """Answers like Slack's incoming webhooks: plain text `ok`, or an error status."""
    with sim.state.lock:
        if sim.state.slack_fail_status != 200:
            sim.state.slack_rejected += 1
            return Reply(sim.state.slack_fail_status, b"internal_error", "text/plain")
        if not isinstance(body, dict):
            return Reply(400, b"invalid_payload", "text/plain")
        sim.state.slack_messages.append(body)
    return Reply(200, b"ok", "text/plain")


def slack_messages(sim: Simulator, _: Any) -> Reply:
    with sim.state.lock:
        return json_reply(200, list(sim.state.slack_messages))


def slack_clear(sim: Simulator, _: Any) -> Reply:
    with sim.state.lock:
        sim.state.slack_messages.clear()
    return json_reply(200, {"cleared": True})


def slack_fail(sim: Simulator, body: Any) -> Reply:
    status = _field(body, "status", int)
    if not 200 <= status <= 599:
        raise BadRequest("status must be an HTTP status between 200 and 599")
    with sim.state.lock:
        sim.state.slack_fail_status = status
    return json_reply(200, {"slack_fail_status": status})


def pagerduty_enqueue(sim: Simulator, body: Any) -> Reply:
    """Events API v2: validates the fields PagerDuty rejects events without."""
    errors = _pagerduty_errors(body)
    if errors:
        payload = {"status": "invalid event", "message": "Event object is invalid"}
        return json_reply(400, {**payload, "errors": errors})
    dedup_key = body.get("dedup_key") or uuid.uuid4().hex
    with sim.state.lock:
        sim.state.pagerduty_events.append({**body, "dedup_key": dedup_key})
    return json_reply(
        202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
    )


def pagerduty_events(sim: Simulator, _: Any) -> Reply:
    with sim.state.lock:
        return json_reply(200, list(sim.state.pagerduty_events))


def pagerduty_clear(sim: Simulator, _: Any) -> Reply:
    with sim.state.lock:
        sim.state.pagerduty_events.clear()
    return json_reply(200, {"cleared": True})


def inject_db_incident(sim: Simulator, _: Any) -> Reply:
    sim.inject_db_incident()
    return json_reply(200, sim.state.snapshot())


def heal_db_incident(sim: Simulator, _: Any) -> Reply:
    sim.heal_db_incident()
    return json_reply(200, sim.state.snapshot())


def reset(sim: Simulator, _: Any) -> Reply:
    sim.reset()
    return json_reply(200, sim.state.snapshot())


def state(sim: Simulator, _: Any) -> Reply:
    return json_reply(200, sim.state.snapshot())


def heal_delay(sim: Simulator, body: Any) -> Reply:
    seconds = _field(body, "seconds", (int, float))
    if seconds < 0:
        raise BadRequest("seconds must be >= 0")
    with sim.state.lock:
        sim.state.heal_delay = float(seconds)
    return json_reply(200, {"heal_delay": float(seconds)})


def _remediation_route(fn: Callable[[Remediation, Any], tuple[int, Any]]) -> Route:
    return lambda sim, body: json_reply(*fn(sim.remediation, body))


def _diagnosis_route(fn: Callable[[DiagnosisSandbox, Any], tuple[int, Any]]) -> Route:
    return lambda sim, body: json_reply(*fn(sim.diagnosis, body))


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/health"): health,
    ("GET", "/health/detailed"): health_detailed,
    ("GET", "/metrics"): metrics,
    ("POST", "/slack/webhook"): slack_webhook,
    ("GET", "/slack/messages"): slack_messages,
    ("DELETE", "/slack/messages"): slack_clear,
    ("POST", "/pagerduty/v2/enqueue"): pagerduty_enqueue,
    ("GET", "/pagerduty/events"): pagerduty_events,
    ("DELETE", "/pagerduty/events"): pagerduty_clear,
    ("POST", "/control/incidents/db-failover"): inject_db_incident,
    ("DELETE", "/control/incidents/db-failover"): heal_db_incident,
    ("POST", "/control/reset"): reset,
    ("GET", "/control/state"): state,
    ("POST", "/control/heal-delay"): heal_delay,
    ("POST", "/control/slack/fail"): slack_fail,
    **{key: _remediation_route(fn) for key, fn in REMEDIATION_ROUTES.items()},
    **{key: _diagnosis_route(fn) for key, fn in DIAGNOSIS_ROUTES.items()},
}


def _field(body: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadRequest(f"body must be a JSON object with a numeric {name!r}")
    return value


def _pagerduty_errors(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["Event must be a JSON object."]
    errors = []
    if not body.get("routing_key"):
        errors.append("'routing_key' is missing or blank.")
    if body.get("event_action") not in PAGERDUTY_ACTIONS:
        errors.append("'event_action' must be one of trigger, acknowledge, resolve.")
    if body.get("event_action") == "trigger":
        payload = body.get("payload") or {}
        for key in ("summary", "source", "severity"):
            if not payload.get(key):
                errors.append(f"'payload.{key}' is missing or blank.")
    elif body.get("event_action") in PAGERDUTY_ACTIONS and not body.get("dedup_key"):
        errors.append("'dedup_key' is required for acknowledge and resolve.")
    return errors


class Handler(BaseHTTPRequestHandler):
    server_version = "revenue-context-sandbox"
    sim: Simulator  # set on the subclass built by make_server

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and the stack read the sandbox's stdout

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        route = ROUTES.get((self.command, path))
        self.sim.diagnosis.delay(path)  # latency injected by /control/latency (bench)
        try:
            body = self._body()
            reply = route(self.sim, body) if route else json_reply(404, {"error": "not found"})
        except BadRequest as exc:
            reply = json_reply(400, {"error": str(exc)})
        if not path.startswith(HARNESS_PREFIXES):
            self.sim.metrics.observe(reply.status)
        self._send(reply)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return None
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from exc

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)


def make_server(host: str, port: int, sim: Simulator) -> ThreadingHTTPServer:
    handler = type("SandboxHandler", (Handler,), {"sim": sim})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
