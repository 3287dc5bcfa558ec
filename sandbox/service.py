"""The sandbox's HTTP API: the service's endpoints, local Slack / PagerDuty, control.

Every path is in ROUTES; the incidents' behaviour is in sandbox/incidents/, one module each.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST

from sandbox import github, pagerduty, slack
from sandbox.replies import BadRequest, Reply, field, json_reply
from sandbox.simulator import Simulator
from sandbox.state import SandboxState

# Paths of the simulated service itself; the rest is harness and stays out of its metrics.
HARNESS_PREFIXES = ("/control/", "/slack/", "/pagerduty/", "/github/")

Route = Callable[[Simulator, Any], Reply]


def health(sim: Simulator, _: Any) -> Reply:
    # The version `api` runs; 503 `degraded` while a bad deploy runs (incidents/rollback.py).
    return json_reply(*sim.rollback.health(sim.version()))


def health_detailed(sim: Simulator, _: Any) -> Reply:
    status, body = sim.detailed_health()
    # The certificate the ALB's HTTPS listener serves (cert-renewal changes it).
    tls = sim.cert_renewal.served()
    return json_reply(status, {**body, "tls": tls} if tls else body)


def health_workers(sim: Simulator, _: Any) -> Reply:
    return json_reply(*sim.kafka_lag.workers_health())


def metrics(sim: Simulator, _: Any) -> Reply:
    return Reply(200, sim.systems.metrics.render(), CONTENT_TYPE_LATEST)


def heal_delay(sim: Simulator, body: Any) -> Reply:
    seconds = field(body, "seconds", (int, float))
    if seconds < 0:
        raise BadRequest("seconds must be >= 0")
    with sim.state.lock:
        sim.state.heal_delay = float(seconds)
    return json_reply(200, {"heal_delay": float(seconds)})


def ecs_control(sim: Simulator, body: Any) -> Reply:
    """How long a new ECS task takes to run."""
    seconds = (body or {}).get("task_start_seconds") if isinstance(body, dict) else None
    if not isinstance(seconds, int | float) or not 0 <= seconds <= 600:
        raise BadRequest('body must be {"task_start_seconds": 0..600}')
    if sim.aws is not None:
        sim.aws.ecs.task_start_seconds = float(seconds)
    return json_reply(200, {"task_start_seconds": float(seconds)})


def showing(snapshot: Callable[[Simulator], Any]) -> Route:
    """Answer 200 with `snapshot`."""
    return lambda sim, _: json_reply(200, snapshot(sim))


def doing(
    action: Callable[[Simulator, Any], object], snapshot: Callable[[Simulator], Any]
) -> Route:
    """Run `action` with the body, then answer 200 with `snapshot`."""

    def route(sim: Simulator, body: Any) -> Reply:
        action(sim, body)
        return json_reply(200, snapshot(sim))

    return route


def on_state(route: Callable[[SandboxState, Any], Reply]) -> Route:
    return lambda sim, body: route(sim.state, body)


def state(sim: Simulator) -> dict[str, Any]:
    return sim.state.snapshot()


def diagnosis(sim: Simulator) -> dict[str, Any]:
    return sim.diagnosis_snapshot()


def remediation(sim: Simulator) -> dict[str, Any]:
    return sim.remediation_snapshot()


def certificate(sim: Simulator) -> dict[str, Any] | None:
    return sim.cert_renewal.served()


INCIDENT = "/control/incidents/"

ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/health"): health,
    ("GET", "/health/detailed"): health_detailed,
    ("GET", "/health/workers"): health_workers,
    ("GET", "/metrics"): metrics,
    **{key: on_state(route) for key, route in slack.ROUTES.items()},
    **{key: on_state(route) for key, route in pagerduty.ROUTES.items()},
    # the harness
    ("POST", "/control/reset"): doing(lambda sim, _: sim.reset(), state),
    ("GET", "/control/state"): showing(state),
    ("POST", "/control/heal-delay"): heal_delay,
    ("POST", "/control/ecs"): ecs_control,
    ("POST", "/control/latency"): doing(
        lambda sim, body: sim.latency.set(body), lambda sim: {"latency": sim.latency.snapshot()}
    ),
    ("DELETE", "/control/latency"): doing(
        lambda sim, _: sim.latency.clear(), lambda sim: {"latency": {}}
    ),
    ("GET", "/control/diagnosis"): showing(diagnosis),
    ("GET", "/control/remediation"): showing(remediation),
    ("POST", "/control/llm"): doing(
        lambda sim, body: sim.llm_budget.configure(body), lambda sim: sim.llm_budget.snapshot()
    ),
    ("GET", "/control/certificates"): showing(certificate),
    # the incidents: POST injects, DELETE heals
    ("POST", INCIDENT + "db-failover"): doing(lambda sim, _: sim.db_failover.inject(), state),
    ("DELETE", INCIDENT + "db-failover"): doing(lambda sim, _: sim.db_failover.heal(), state),
    ("POST", INCIDENT + "kafka-lag"): doing(lambda sim, b: sim.kafka_lag.inject(b), diagnosis),
    ("DELETE", INCIDENT + "kafka-lag"): doing(lambda sim, _: sim.kafka_lag.heal(), diagnosis),
    ("POST", INCIDENT + "api-errors"): doing(lambda sim, b: sim.api_errors.inject(b), diagnosis),
    ("DELETE", INCIDENT + "api-errors"): doing(lambda sim, _: sim.api_errors.heal(), diagnosis),
    ("POST", INCIDENT + "llm-budget"): doing(lambda sim, _: sim.llm_budget.inject(), remediation),
    ("DELETE", INCIDENT + "llm-budget"): doing(lambda sim, _: sim.llm_budget.heal(), remediation),
    ("POST", INCIDENT + "high-memory"): doing(lambda sim, _: sim.high_memory.inject(), remediation),
    ("DELETE", INCIDENT + "high-memory"): doing(lambda sim, _: sim.high_memory.heal(), remediation),
    ("POST", INCIDENT + "rollback"): doing(lambda sim, b: sim.rollback.inject(b), remediation),
    ("DELETE", INCIDENT + "rollback"): doing(lambda sim, _: sim.rollback.reset(), remediation),
    # the listener serves a certificate expiring in `days_left` (no DELETE: reset restores it)
    ("POST", INCIDENT + "cert-renewal"): doing(
        lambda sim, b: sim.cert_renewal.inject(b), certificate
    ),
}


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
        path, _, query = self.path.partition("?")
        path = path.rstrip("/") or "/"
        route = (
            ROUTES.get((self.command, path))
            or self._slack_api(path)
            or self._github_api(path, query)
        )
        self.sim.latency.delay(path)  # latency injected by /control/latency (bench)
        try:
            body = self._body()
            reply = route(self.sim, body) if route else json_reply(404, {"error": "not found"})
        except BadRequest as exc:
            reply = json_reply(exc.status, {"error": str(exc)})
        if not path.startswith(HARNESS_PREFIXES):
            self.sim.systems.metrics.observe(reply.status)
        self._send(reply)

    def _slack_api(self, path: str) -> Route | None:
        """A Slack Web API call: its answer depends on the Authorization header."""
        if self.command != "POST" or not path.startswith(slack.API_PREFIX):
            return None
        authorization = self.headers.get("Authorization")
        return lambda sim, body: slack.web_api(sim.state, path, authorization, body)

    def _github_api(self, path: str, query: str) -> Route | None:
        """A GitHub issues call (sandbox/github.py): its answer depends on the token and
        the query string."""
        route = github.ROUTES.get((self.command, path))
        if route is None:
            return None
        request = github.GitHubRequest(self.headers.get("Authorization", ""), parse_qs(query))
        return lambda sim, body: route(sim.state, request.with_body(body))

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
