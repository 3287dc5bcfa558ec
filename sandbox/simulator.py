"""The simulated service: its systems and its incidents, started, reset and stopped together,
and what it reports about itself (health, version, the control API's snapshots)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from sandbox.aws import REGION, AwsSandbox
from sandbox.deployments import DeploymentWatch, image_tag
from sandbox.health import check_kafka, check_redis
from sandbox.incidents.api_errors import ApiErrors
from sandbox.incidents.cert_renewal import CertRenewal
from sandbox.incidents.db_failover import DbFailover
from sandbox.incidents.high_memory import METRIC as MEMORY_METRIC
from sandbox.incidents.high_memory import HighMemory
from sandbox.incidents.kafka_lag import KafkaLag
from sandbox.incidents.llm_budget import LlmBudget
from sandbox.incidents.rollback import BadDeploy
from sandbox.kafka_workers import KafkaWorkers
from sandbox.latency import Latency
from sandbox.logs import LogFeed
from sandbox.metric_feed import MinuteFeed
from sandbox.metrics import ServiceMetrics
from sandbox.state import SandboxState
from sandbox.systems import Systems


@dataclass(frozen=True)
class Dependencies:
    database_url: str | None = None
    redis_url: str | None = None
    kafka_bootstrap: str | None = None


class Simulator:
    def __init__(self, state: SandboxState, deps: Dependencies) -> None:
        self.state = state
        self.deps = deps
        self.systems = Systems(state, DeploymentWatch(REGION, self._on_deployed))
        self.latency = Latency()
        self.db_failover = DbFailover(self.systems, deps.database_url)
        self.kafka_lag = KafkaLag(self.systems, deps.database_url)
        self.api_errors = ApiErrors(self.systems)
        self.llm_budget = LlmBudget(self.systems, deps.redis_url)
        self.high_memory = HighMemory(self.systems)
        self.rollback = BadDeploy(self.systems)
        self.cert_renewal = CertRenewal(REGION)
        self.systems.metrics = self._new_metrics()

    @property
    def aws(self) -> AwsSandbox | None:
        return self.systems.aws

    # ---- life cycle ---------------------------------------------------------------------

    def start(self, aws: AwsSandbox | None) -> None:
        """After moto is up and seeded (or without AWS)."""
        systems = self.systems
        if aws is not None:
            systems.aws = aws
            self.llm_budget.start(aws.client("secretsmanager"))
            systems.deployments.start()
            series = [self.llm_budget.series(), *self.high_memory.series()]
            systems.feed = MinuteFeed(aws.client("cloudwatch"), REGION, series)
            systems.feed.start()
            self.cert_renewal.start(aws.client)
            systems.logs = LogFeed(aws.client, self.log_incidents)
            systems.logs.start()
            self.latency.patch_moto()
        if self.deps.kafka_bootstrap:
            workers = partial(systems.running, "context-engine")  # they follow ECS
            systems.kafka = KafkaWorkers(self.deps.kafka_bootstrap, workers)
            systems.kafka.start()
        self.api_errors.start()

    def reset(self) -> None:
        """Everything back to its seed; never while the database incident is injected or
        healed (a reboot finishing)."""
        systems = self.systems
        with self.db_failover.lock:
            started = self.db_failover.started()
            self.state.clear()
            if systems.aws is not None:
                systems.aws.reset()
            self.db_failover.forget(started)
            systems.metrics = self._new_metrics()
            if systems.aws is not None:
                self.llm_budget.seed_secret()
                self.llm_budget.reset()
                self.high_memory.reset()
                self.rollback.reset()
                systems.deployments.reset()
                if systems.feed is not None:
                    systems.feed.rewrite()
                self.cert_renewal.reset()
            self.kafka_lag.reset()
            self.api_errors.reset()
            self.latency.clear()
            if systems.kafka is not None:
                systems.kafka.reset()
            if systems.logs is not None:
                systems.logs.clear()

    def shutdown(self) -> None:
        systems = self.systems
        self.db_failover.close()
        self.cert_renewal.stop()
        if systems.feed is not None:
            systems.feed.stop()
        systems.deployments.stop()
        self.llm_budget.stop()
        self.api_errors.stop()
        for part in (systems.kafka, systems.logs):
            if part is not None:
                part.stop()
        self.latency.unpatch_moto()
        if systems.aws is not None:
            systems.aws.stop()

    # ---- what the service reports -------------------------------------------------------

    def version(self) -> str:
        """The image tag `api` runs (a rollback changes it), once ECS is simulated."""
        image = self.systems.deployments.image("api")
        return image_tag(image) if image else self.state.version

    def detailed_health(self) -> tuple[int, dict[str, Any]]:
        checks = {
            "database": self.db_failover.database_check(),
            "redis": check_redis(self.deps.redis_url),
            "kafka": check_kafka(self.deps.kafka_bootstrap),
        }
        healthy = all(check["status"] == "up" for check in checks.values())
        body = {"status": "healthy" if healthy else "unhealthy", "checks": checks}
        return (200 if healthy else 503), body

    def log_incidents(self) -> set[str]:
        """The incidents that write error lines to the services' logs now."""
        return {i.name for i in (self.kafka_lag, self.api_errors) if i.active()}

    def diagnosis_snapshot(self) -> dict[str, Any]:
        """`/control/diagnosis`: kafka-lag and api-errors, breakers, latency, ECS, Kafka."""
        incidents = {i.name: i.params() for i in (self.kafka_lag, self.api_errors)}
        snapshot: dict[str, Any] = {
            "incidents": {name: p for name, p in incidents.items() if p is not None},
            "breakers": self.api_errors.breaker_states(),
            "latency": self.latency.snapshot(),
            "running": {s: self.systems.running(s) for s in ("api", "context-engine")},
            "error_share": self.api_errors.error_share(),
        }
        if self.systems.kafka is not None:
            snapshot["kafka"] = self.systems.kafka.snapshot()
        return snapshot

    def remediation_snapshot(self) -> dict[str, Any]:
        """`/control/remediation`: llm-budget, the services' deployments, high-memory,
        rollback."""
        return {
            "llm": self.llm_budget.snapshot(),
            "services": self.systems.deployments.snapshot(),
            "memory": self.high_memory.snapshot(),
            "rollback": self.rollback.snapshot(),
        }

    # ---- wiring -------------------------------------------------------------------------

    def _new_metrics(self) -> ServiceMetrics:
        metrics = ServiceMetrics(self.db_failover.db_connections)
        metrics.registry.register(self.llm_budget)
        metrics.registry.register(self.api_errors)
        return metrics

    def _on_deployed(self, service: str, image: str) -> None:
        """A completed deployment: a new `api` reads its budget; tasks' memory changed."""
        if service == "api":
            self.llm_budget.reload_budget()
        self.systems.rewrite(MEMORY_METRIC, minutes=2)
