"""high-memory: `api` needs more memory than its tasks have, and ECS kills them (OOM);
a larger memory limit ends it (the task's and its container's own: the lower one counts,
sandbox/deployments.py). ContainerInsights reports each service's memory use, capped just
under that limit."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sandbox.ecs import CLUSTER, OOM_REASON
from sandbox.metric_feed import Series
from sandbox.systems import Systems

NAME = "high-memory"
METRIC = "MemoryUtilized"
NAMESPACE = "ECS/ContainerInsights"
# MiB a task of each service needs, normally and under the incident's load (api grows past
# its 2048 MiB and is killed); what it reports is capped just under its memory limit.
MEMORY_NEED = {"api": 1100.0, "context-engine": 900.0, "orchestration-engine": 700.0}
INCIDENT_NEED = 2600.0


class HighMemory:
    def __init__(self, systems: Systems) -> None:
        self.systems = systems
        self._lock = threading.Lock()
        self.incident = False

    def reset(self) -> None:
        with self._lock:
            self.incident = False

    def inject(self) -> None:
        with self._lock:
            self.incident = True
        if self.systems.aws is not None:
            self.systems.aws.ecs.add_stopped("api", 3, OOM_REASON, exit_code=137)
        self.systems.rewrite(METRIC)

    def heal(self) -> None:
        with self._lock:
            self.incident = False
        self.systems.rewrite(METRIC)

    def memory_used(self, service: str) -> float | None:
        """MiB a task of the service uses now (what ContainerInsights reports)."""
        limit = self.systems.deployments.memory(service)
        if not limit:
            return None
        with self._lock:
            need = INCIDENT_NEED if self.incident and service == "api" else None
        need = need or MEMORY_NEED[service]
        return min(need, limit * 0.97)

    def oom_killing(self) -> bool:
        limit = self.systems.deployments.memory("api")
        with self._lock:
            return self.incident and bool(limit) and (limit or 0) * 0.97 < INCIDENT_NEED

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            incident = self.incident
        return {
            "incident": incident,
            "api_used_mib": self.memory_used("api"),
            "oom_killing": self.oom_killing(),
        }

    def series(self) -> list[Series]:
        return [
            Series(
                NAMESPACE,
                METRIC,
                (("ClusterName", CLUSTER), ("ServiceName", service)),
                "Megabytes",
                self._memory_at(service),
            )
            for service in MEMORY_NEED
        ]

    def _memory_at(self, service: str) -> Callable[[datetime], float | None]:
        return lambda _when: self.memory_used(service)
