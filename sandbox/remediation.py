"""The sandbox side of llm-budget, high-memory, rollback and cert-renewal (issue 5).

One object the simulator holds: it seeds what these runbooks need in moto, simulates what
their remediations change (the budget in force after a redeploy, the image `/health`
reports, memory use per task size), and serves its part of the control API. Hooks in
simulator.py / service.py / __main__.py call `start`, `reset`, `stop`, `collect` and
`ROUTES`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sandbox.certificates import CERT_INCIDENT, CertificateSim
from sandbox.deployments import DeploymentWatch, image_tag
from sandbox.llm import LLM_INCIDENT, LlmSim
from sandbox.metric_feed import MinuteFeed, Series
from sandbox.rollback import ROUTES as ROLLBACK_ROUTES
from sandbox.rollback import BadDeploy

REGION = "us-east-1"
LLM_NAMESPACE = "RevenueContext/LLM"
LLM_CALLS_METRIC = "LlmApiCalls"
CLUSTER = "prod-revenue-context"
MEMORY_INCIDENT = "high-memory"
MEMORY_METRIC = "MemoryUtilized"
CONTAINER_INSIGHTS = "ECS/ContainerInsights"
OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"
# MiB a task of each service needs, normally and under the incident's load (api grows past
# its 2048 MiB and is killed); what it reports is capped just under its task's memory.
MEMORY_NEED = {"api": 1100.0, "context-engine": 900.0, "orchestration-engine": 700.0}
INCIDENT_NEED = 2600.0


class Remediation:
    def __init__(self, redis_url: str | None) -> None:
        self.llm = LlmSim(redis_url)
        self.deployments = DeploymentWatch(REGION, self._on_deployed)
        self.feed: MinuteFeed | None = None
        self.aws: Any = None
        self._lock = threading.Lock()
        self.memory_incident = False
        self.bad_deploy = BadDeploy()  # the rollback incident
        self.certificates = CertificateSim(REGION)

    # ---- life cycle (hooks) -------------------------------------------------------------

    def start(self, aws: Any) -> None:
        """After moto is up and ECS is seeded (sandbox/__main__.py)."""
        self.aws = aws
        self.llm.start(aws.client("secretsmanager"))
        self.deployments.start()
        self.feed = MinuteFeed(aws.client("cloudwatch"), REGION, self._series())
        self.feed.start()
        self.certificates.start(aws.client)

    def reset(self) -> None:
        """After the simulator's own reset (ECS back to its seed)."""
        if self.aws is None:
            return
        self.llm.seed_secret()
        self.llm.reset()
        with self._lock:
            self.memory_incident = False
        self.bad_deploy.reset()
        self.deployments.reset()
        if self.feed is not None:
            self.feed.rewrite()
        self.certificates.reset()

    def stop(self) -> None:
        self.certificates.stop()
        if self.feed is not None:
            self.feed.stop()
        self.deployments.stop()
        self.llm.stop()

    # ---- what the service reports -------------------------------------------------------

    def collect(self) -> list[Any]:
        return self.llm.collect()

    def version(self) -> str | None:
        """The image tag `api` runs, for `/health`."""
        image = self.deployments.image("api")
        return image_tag(image) if image else None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            memory_incident = self.memory_incident
        return {
            "llm": self.llm.snapshot(),
            "services": self.deployments.snapshot(),
            "memory": {
                "incident": memory_incident,
                "api_used_mib": self.memory_used("api"),
                "oom_killing": self.oom_killing(),
            },
            "rollback": self.bad_deploy.snapshot(),
        }

    # ---- incidents ------------------------------------------------------------------------

    def inject_llm(self) -> None:
        self.llm.inject()
        self._rewrite(LLM_CALLS_METRIC)

    def heal_llm(self) -> None:
        self.llm.heal()
        self._rewrite(LLM_CALLS_METRIC)

    def inject_memory(self) -> None:
        """api needs more memory than its tasks have: ECS kills them (OOM)."""
        with self._lock:
            self.memory_incident = True
        if self.aws is not None:
            self.aws.ecs.add_stopped("api", 3, OOM_REASON, exit_code=137)
        self._rewrite(MEMORY_METRIC)

    def heal_memory(self) -> None:
        with self._lock:
            self.memory_incident = False
        self._rewrite(MEMORY_METRIC)

    def memory_used(self, service: str) -> float | None:
        """MiB a task of the service uses now (what ContainerInsights reports)."""
        limit = self.deployments.memory(service)
        if not limit:
            return None
        with self._lock:
            need = INCIDENT_NEED if self.memory_incident and service == "api" else None
        need = need or MEMORY_NEED[service]
        return min(need, limit * 0.97)

    def oom_killing(self) -> bool:
        limit = self.deployments.memory("api")
        with self._lock:
            return self.memory_incident and bool(limit) and (limit or 0) * 0.97 < INCIDENT_NEED

    def _on_deployed(self, service: str, image: str) -> None:
        if service == "api":
            self.llm.reload_budget()
        self._rewrite(MEMORY_METRIC, minutes=2)

    def _rewrite(self, metric: str, minutes: int = 60) -> None:
        if self.feed is not None:
            self.feed.rewrite(minutes, metric=metric)

    def _series(self) -> list[Series]:
        calls = Series(
            LLM_NAMESPACE, LLM_CALLS_METRIC, (("Service", "api"),), "Count", self.llm.calls_at
        )
        memory = [
            Series(
                CONTAINER_INSIGHTS,
                MEMORY_METRIC,
                (("ClusterName", CLUSTER), ("ServiceName", service)),
                "Megabytes",
                self._memory_at(service),
            )
            for service in MEMORY_NEED
        ]
        return [calls, *memory]

    def _memory_at(self, service: str) -> Callable[[datetime], float | None]:
        return lambda _when: self.memory_used(service)


# ---- control API: (method, path) -> fn(remediation, body) -> (status, payload) ------------

Route = Callable[[Remediation, Any], tuple[int, Any]]


def _number(body: Any, name: str) -> float | None:
    value = body.get(name) if isinstance(body, dict) else None
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a number >= 0")
    return float(value)


def _state(rem: Remediation, _: Any) -> tuple[int, Any]:
    return 200, rem.snapshot()


def _inject_llm(rem: Remediation, _: Any) -> tuple[int, Any]:
    rem.inject_llm()
    return 200, rem.snapshot()


def _heal_llm(rem: Remediation, _: Any) -> tuple[int, Any]:
    rem.heal_llm()
    return 200, rem.snapshot()


def _inject_memory(rem: Remediation, _: Any) -> tuple[int, Any]:
    rem.inject_memory()
    return 200, rem.snapshot()


def _heal_memory(rem: Remediation, _: Any) -> tuple[int, Any]:
    rem.heal_memory()
    return 200, rem.snapshot()


def _configure_llm(rem: Remediation, body: Any) -> tuple[int, Any]:
    try:
        rate, cost = _number(body, "calls_per_minute"), _number(body, "cost_per_call")
    except ValueError as exc:
        return 400, {"error": str(exc)}
    rem.llm.configure(rate, cost)
    return 200, rem.llm.snapshot()


def _certificates(rem: Remediation, _: Any) -> tuple[int, Any]:
    return 200, rem.certificates.served()


def _expiring_certificate(rem: Remediation, body: Any) -> tuple[int, Any]:
    """The listener serves an imported certificate expiring in `days_left` (default 20)."""
    try:
        days = _number(body, "days_left")
    except ValueError as exc:
        return 400, {"error": str(exc)}
    if days is not None and not 0.01 <= days <= 825:
        return 400, {"error": "days_left must be between 0.01 and 825"}
    rem.certificates.serve_expiring(days or 20.0)
    return 200, rem.certificates.served()


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/control/remediation"): _state,
    ("POST", f"/control/incidents/{LLM_INCIDENT}"): _inject_llm,
    ("DELETE", f"/control/incidents/{LLM_INCIDENT}"): _heal_llm,
    ("POST", "/control/llm"): _configure_llm,
    ("POST", f"/control/incidents/{MEMORY_INCIDENT}"): _inject_memory,
    ("DELETE", f"/control/incidents/{MEMORY_INCIDENT}"): _heal_memory,
    **ROLLBACK_ROUTES,
    ("GET", "/control/certificates"): _certificates,
    ("POST", f"/control/incidents/{CERT_INCIDENT}"): _expiring_certificate,
}
