"""AWS/RDS CloudWatch metrics in moto: one datapoint a minute, normal or incident level.

Real RDS publishes DatabaseConnections and CPUUtilization every minute; here a ticker
thread does it. Injecting or healing an incident rewrites the recent minutes, so that
`get_metric_statistics` over the runbook's 10-minute window shows the change at once.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.cloudwatch.models import cloudwatch_backends
from moto.core.models import DEFAULT_ACCOUNT_ID

NAMESPACE = "AWS/RDS"
DIMENSION = "DBInstanceIdentifier"
SEED_MINUTES = 60
# Longer than the runbook's 10-minute window, so the whole window shows the incident.
INCIDENT_MINUTES = 15
BATCH = 500  # put_metric_data accepts at most 1000 items a call
# metric -> (unit, normal (mean, jitter), incident (mean, jitter))
METRICS: dict[str, tuple[str, tuple[float, float], tuple[float, float]]] = {
    "DatabaseConnections": ("Count", (40.0, 4.0), (480.0, 10.0)),
    "CPUUtilization": ("Percent", (25.0, 3.0), (95.0, 2.0)),
}


def _minute(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


def _naive_utc(when: datetime) -> datetime:
    # moto stores timestamps as naive UTC.
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


class RdsMetricsFeed:
    """Writes the metrics of some instances; `in_incident(identifier)` picks the level."""

    def __init__(
        self,
        cloudwatch: Any,
        region: str,
        instances: Iterable[str],
        in_incident: Callable[[str], bool],
    ) -> None:
        self._cloudwatch = cloudwatch
        self._region = region
        self._instances = list(instances)
        self._in_incident = in_incident
        self._lock = threading.Lock()  # one writer at a time: no duplicate minutes
        self._last_minute = _minute(datetime.now(UTC)) - timedelta(minutes=SEED_MINUTES)
        self._rng = random.Random(1729)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rds-metrics", daemon=True)

    def start(self) -> None:
        self.tick()  # seeds the last hour
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def tick(self) -> None:
        """Write every minute since the last one written, for every instance."""
        with self._lock:
            self._catch_up()

    def rewrite(self, identifier: str, minutes: int) -> None:
        """Replace the last `minutes` of an instance's datapoints with its current level."""
        with self._lock:
            self._catch_up()
            since = self._last_minute - timedelta(minutes=minutes - 1)
            self._delete(identifier, since)
            self._put(identifier, self._minutes(since, self._last_minute))

    def _run(self) -> None:
        while not self._stop.wait(5):
            self.tick()

    def _catch_up(self) -> None:
        now = _minute(datetime.now(UTC))
        if now <= self._last_minute:
            return
        first = self._last_minute + timedelta(minutes=1)
        for identifier in self._instances:
            self._put(identifier, self._minutes(first, now))
        self._last_minute = now

    @staticmethod
    def _minutes(first: datetime, last: datetime) -> list[datetime]:
        count = int((last - first).total_seconds() // 60) + 1
        return [first + timedelta(minutes=i) for i in range(count)]

    def _put(self, identifier: str, minutes: list[datetime]) -> None:
        incident = self._in_incident(identifier)
        data = [
            self._datum(identifier, metric, when, incident)
            for metric in METRICS
            for when in minutes
        ]
        for start in range(0, len(data), BATCH):
            batch = data[start : start + BATCH]
            self._cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=batch)

    def _datum(self, identifier: str, metric: str, when: datetime, incident: bool) -> dict:
        unit, normal, high = METRICS[metric]
        mean, jitter = high if incident else normal
        value = mean + self._rng.uniform(-jitter, jitter)
        if unit == "Percent":
            value = min(value, 100.0)
        return {
            "MetricName": metric,
            "Dimensions": [{"Name": DIMENSION, "Value": identifier}],
            "Timestamp": when,
            "Value": round(value, 2),
            "Unit": unit,
        }

    def _delete(self, identifier: str, since: datetime) -> None:
        """CloudWatch has no delete; moto keeps datapoints in a list we can filter."""
        backend = cloudwatch_backends[DEFAULT_ACCOUNT_ID][self._region]
        cutoff = _naive_utc(since)
        backend.metric_data[:] = [
            datum
            for datum in backend.metric_data
            if not (
                datum.namespace == NAMESPACE
                and datum.name in METRICS
                and any(d.name == DIMENSION and d.value == identifier for d in datum.dimensions)
                and _naive_utc(datum.timestamp) >= cutoff
            )
        ]
