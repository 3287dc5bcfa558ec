"""api-errors: the share of 5xx answers climbs. Three causes: too few `api` tasks
(capacity: more tasks bring the share down), an external provider (its circuit breaker
opens) or the database. The service's own traffic, 40 requests a second, shows the share in
`http_requests_total`; the breakers are `circuit_breaker_state` on `/metrics`."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sandbox.ecs import CRASH_REASON
from sandbox.replies import BadRequest
from sandbox.systems import Systems

NAME = "api-errors"
BREAKERS = ("openai", "salesforce", "context-engine")
BREAKER_VALUES = {"closed": 0, "open": 1, "half_open": 2}
CAUSES = ("capacity", "external", "database")
TASKS_NEEDED = 4  # below this many running api tasks, the capacity incident errors
REQUESTS_PER_TICK, TRAFFIC_TICK = 10, 0.25  # 40 requests a second


class ApiErrors(Collector):
    name = NAME

    def __init__(self, systems: Systems) -> None:
        self.systems = systems
        self._lock = threading.Lock()
        self._cause: str | None = None
        self.breakers: dict[str, str] = dict.fromkeys(BREAKERS, "closed")
        self._rng = random.Random(11)
        self._stop = threading.Event()
        self._traffic = threading.Thread(target=self._traffic_loop, name="api-traffic", daemon=True)

    def start(self) -> None:
        self._traffic.start()

    def stop(self) -> None:
        self._stop.set()

    def reset(self) -> None:
        with self._lock:
            self._cause = None
            self.breakers = dict.fromkeys(BREAKERS, "closed")

    def params(self) -> dict[str, Any] | None:
        """What it was injected with, while it lasts."""
        with self._lock:
            return {"cause": self._cause} if self._cause is not None else None

    def active(self) -> bool:
        with self._lock:
            return self._cause is not None

    def inject(self, body: Any) -> None:
        """Body: {"cause": "capacity" | "external" | "database"} (default capacity)."""
        cause = (body or {}).get("cause", "capacity") if isinstance(body, dict) else "capacity"
        if cause not in CAUSES:
            raise BadRequest(f"cause must be one of {', '.join(CAUSES)}")
        with self._lock:
            self._cause = cause
            if cause == "external":
                self.breakers["openai"] = "open"
        if self.systems.aws is not None:
            self.systems.aws.ecs.set_health("api", 1)
            self.systems.aws.ecs.add_stopped("api", 2, CRASH_REASON, exit_code=1)
        self.systems.backfill_logs(NAME)

    def heal(self) -> None:
        with self._lock:
            self._cause = None
            self.breakers = dict.fromkeys(BREAKERS, "closed")
        if self.systems.aws is not None:
            self.systems.aws.ecs.set_health("api", 0)

    def error_share(self) -> float:
        with self._lock:
            cause = self._cause
        if cause is None:
            return 0.002
        if cause == "capacity":
            return 0.18 if self.systems.running("api") < TASKS_NEEDED else 0.003
        if cause == "external":
            return 0.07
        return 0.25

    def breaker_states(self) -> dict[str, str]:
        with self._lock:
            return dict(self.breakers)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "circuit_breaker_state",
            "Circuit breaker state by dependency: 0 closed, 1 open, 2 half-open",
            labels=["breaker"],
        )
        for name, state in self.breaker_states().items():
            family.add_metric([name], BREAKER_VALUES[state])
        yield family

    def _traffic_loop(self) -> None:
        while not self._stop.wait(TRAFFIC_TICK):
            share = self.error_share()
            metrics = self.systems.metrics
            for _ in range(REQUESTS_PER_TICK):
                metrics.observe(503 if self._rng.random() < share else 200)
