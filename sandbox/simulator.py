"""The simulated service's behaviour: incidents, what heals them, what health reports."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from sandbox.aws import AwsSandbox
from sandbox.cloudwatch import INCIDENT_MINUTES
from sandbox.database import LeakedConnections
from sandbox.diagnosis import DiagnosisSandbox
from sandbox.health import Check, check_kafka, check_postgres, check_redis, down
from sandbox.metrics import ServiceMetrics
from sandbox.remediation import Remediation
from sandbox.state import APP_DB_INSTANCE, DB_INCIDENT, SandboxState

POOL_EXHAUSTED = "connection pool exhausted: FATAL: sorry, too many clients already"
NORMAL_CONNECTIONS, INCIDENT_CONNECTIONS = 40, 480
MAX_REWRITE_MINUTES = 24 * 60


@dataclass(frozen=True)
class Dependencies:
    database_url: str | None = None
    redis_url: str | None = None
    kafka_bootstrap: str | None = None


class Simulator:
    def __init__(self, state: SandboxState, deps: Dependencies) -> None:
        self.state = state
        self.deps = deps
        self.leaks = LeakedConnections(deps.database_url)
        self.metrics = ServiceMetrics(self.db_connections)
        self.aws: AwsSandbox | None = None
        # llm-budget, high-memory, rollback, cert-renewal (sandbox/remediation.py)
        self.remediation = Remediation(deps.redis_url)
        self.metrics.registry.register(self.remediation)
        # kafka-lag, api-errors, triage (sandbox/diagnosis.py); started with the AWS part
        self.diagnosis = DiagnosisSandbox(deps.kafka_bootstrap, deps.database_url)
        self.metrics.registry.register(self.diagnosis)
        # Serializes inject / heal / reset, which do slow I/O outside `state.lock`.
        self._ops = threading.Lock()

    def in_incident(self, identifier: str) -> bool:
        return identifier == APP_DB_INSTANCE and self.state.incident_active(DB_INCIDENT)

    def db_connections(self) -> float:
        if self.state.app_db_status() != "available":
            return 0
        return INCIDENT_CONNECTIONS if self.in_incident(APP_DB_INSTANCE) else NORMAL_CONNECTIONS

    def inject_db_incident(self) -> None:
        with self._ops:
            with self.state.lock:
                self.state.incidents.setdefault(DB_INCIDENT, time.time())
            error = self.leaks.open(3)
            with self.state.lock:
                self.state.leaked_connections = self.leaks.count
                self.state.database_error = error
            self._rewrite_metrics(INCIDENT_MINUTES)

    def heal_db_incident(self) -> None:
        with self._ops:
            with self.state.lock:
                started = self.state.incidents.pop(DB_INCIDENT, None)
            self._drop_connections()
            if started is not None:
                self._rewrite_metrics(_minutes_since(started) + INCIDENT_MINUTES)

    def on_rebooted(self, identifier: str, failover: bool) -> None:
        """A reboot of the app's database restarts PostgreSQL, whether or not it failed over."""
        if identifier == APP_DB_INSTANCE:
            self.heal_db_incident()

    def reset(self) -> None:
        with self._ops:
            with self.state.lock:
                started = self.state.incidents.get(DB_INCIDENT)
            self.state.clear()
            self._drop_connections()
            if self.aws is not None:
                self.aws.reset()
            if started is not None:
                self._rewrite_metrics(_minutes_since(started) + INCIDENT_MINUTES)
            self.metrics = ServiceMetrics(self.db_connections)
            self.remediation.reset()
            self.metrics.registry.register(self.remediation)
            self.diagnosis.reset()
            self.metrics.registry.register(self.diagnosis)

    def shutdown(self) -> None:
        self.leaks.close_all()
        self.remediation.stop()
        self.diagnosis.stop()
        if self.aws is not None:
            self.aws.stop()

    def detailed_health(self) -> tuple[int, dict[str, Any]]:
        checks = {
            "database": self._database_check(),
            "redis": check_redis(self.deps.redis_url),
            "kafka": check_kafka(self.deps.kafka_bootstrap),
        }
        healthy = all(check["status"] == "up" for check in checks.values())
        body = {"status": "healthy" if healthy else "unhealthy", "checks": checks}
        return (200 if healthy else 503), body

    def _database_check(self) -> Check:
        if self.in_incident(APP_DB_INSTANCE):
            return down(POOL_EXHAUSTED)
        status = self.state.app_db_status()
        if status != "available":
            return down(f"{APP_DB_INSTANCE} is {status}: connection refused")
        return check_postgres(self.deps.database_url)

    def _drop_connections(self) -> None:
        self.leaks.close_all()
        with self.state.lock:
            self.state.leaked_connections = 0
            self.state.database_error = None

    def _rewrite_metrics(self, minutes: int) -> None:
        if self.aws is not None:
            self.aws.metrics.rewrite(APP_DB_INSTANCE, min(minutes, MAX_REWRITE_MINUTES))


def _minutes_since(started: float) -> int:
    return math.ceil((time.time() - started) / 60)
