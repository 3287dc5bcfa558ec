"""The service's Prometheus metrics, in a registry of its own (reset builds a new one)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)

# `*_created` series only add noise to what the runbooks grep; this process is ours alone.
disable_created_metrics()


class ServiceMetrics:
    def __init__(self, db_connections: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "http_requests",
            "HTTP requests served, by status class",
            ["status"],
            registry=self.registry,
        )
        for status in ("2xx", "4xx", "5xx"):
            self._requests.labels(status=status)  # export zeros before the first request
        gauge = Gauge(
            "db_connections_active",
            "Connections the service holds to PostgreSQL",
            registry=self.registry,
        )
        gauge.set_function(db_connections)

    def observe(self, status: int) -> None:
        self._requests.labels(status=f"{status // 100}xx").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
