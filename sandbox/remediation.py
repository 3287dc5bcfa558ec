"""The sandbox side of llm-budget, high-memory, rollback and cert-renewal (issue 5).

One object the simulator holds: it seeds what these runbooks need in moto, simulates what
their remediations change (the budget in force after a redeploy, the image `/health`
reports, memory use per task size), and serves its part of the control API. Hooks in
simulator.py / service.py / __main__.py call `start`, `reset`, `stop`, `collect` and
`ROUTES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.deployments import DeploymentWatch, image_tag
from sandbox.llm import LLM_INCIDENT, LlmSim
from sandbox.metric_feed import MinuteFeed, Series

REGION = "us-east-1"
LLM_NAMESPACE = "RevenueContext/LLM"
LLM_CALLS_METRIC = "LlmApiCalls"


class Remediation:
    def __init__(self, redis_url: str | None) -> None:
        self.llm = LlmSim(redis_url)
        self.deployments = DeploymentWatch(REGION, self._on_deployed)
        self.feed: MinuteFeed | None = None
        self.aws: Any = None

    # ---- life cycle (hooks) -------------------------------------------------------------

    def start(self, aws: Any) -> None:
        """After moto is up and ECS is seeded (sandbox/__main__.py)."""
        self.aws = aws
        self.llm.start(aws.client("secretsmanager"))
        self.deployments.start()
        self.feed = MinuteFeed(aws.client("cloudwatch"), REGION, self._series())
        self.feed.start()

    def reset(self) -> None:
        """After the simulator's own reset (ECS back to its seed)."""
        if self.aws is None:
            return
        self.llm.seed_secret()
        self.llm.reset()
        self.deployments.reset()
        if self.feed is not None:
            self.feed.rewrite()

    def stop(self) -> None:
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
        return {"llm": self.llm.snapshot(), "services": self.deployments.snapshot()}

    # ---- incidents ------------------------------------------------------------------------

    def inject_llm(self) -> None:
        self.llm.inject()
        self._rewrite(LLM_CALLS_METRIC)

    def heal_llm(self) -> None:
        self.llm.heal()
        self._rewrite(LLM_CALLS_METRIC)

    def _on_deployed(self, service: str, image: str) -> None:
        if service == "api":
            self.llm.reload_budget()

    def _rewrite(self, metric: str) -> None:
        if self.feed is not None:
            self.feed.rewrite(metric=metric)

    def _series(self) -> list[Series]:
        return [
            Series(
                LLM_NAMESPACE,
                LLM_CALLS_METRIC,
                (("Service", "api"),),
                "Count",
                self.llm.calls_at,
            )
        ]


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


def _configure_llm(rem: Remediation, body: Any) -> tuple[int, Any]:
    try:
        rate, cost = _number(body, "calls_per_minute"), _number(body, "cost_per_call")
    except ValueError as exc:
        return 400, {"error": str(exc)}
    rem.llm.configure(rate, cost)
    return 200, rem.llm.snapshot()


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/control/remediation"): _state,
    ("POST", f"/control/incidents/{LLM_INCIDENT}"): _inject_llm,
    ("DELETE", f"/control/incidents/{LLM_INCIDENT}"): _heal_llm,
    ("POST", "/control/llm"): _configure_llm,
}
