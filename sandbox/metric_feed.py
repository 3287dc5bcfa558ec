"""A CloudWatch feed in moto: one datapoint a minute for each series, at the level the
sandbox's state gives it; a state change can rewrite the recent minutes so that a query
over the last hour shows it at once (CloudWatch has no delete; moto's list can be filtered).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.cloudwatch.models import cloudwatch_backends
from moto.core.models import DEFAULT_ACCOUNT_ID

SEED_MINUTES = 60
BATCH = 500  # put_metric_data takes at most 1000 items a call


@dataclass(frozen=True)
class Series:
    namespace: str
    metric: str
    dimensions: tuple[tuple[str, str], ...]
    unit: str
    # The value for a minute; None writes nothing for that minute.
    value: Callable[[datetime], float | None]


def minute(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


class MinuteFeed:
    def __init__(self, cloudwatch: Any, region: str, series: list[Series]) -> None:
        self._cw = cloudwatch
        self._region = region
        self._series = series
        self._lock = threading.Lock()
        self._last = minute(datetime.now(UTC)) - timedelta(minutes=SEED_MINUTES)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metric-feed", daemon=True)

    def start(self) -> None:
        self.tick()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def tick(self) -> None:
        with self._lock:
            now = minute(datetime.now(UTC))
            if now > self._last:
                self._put(self._series, self._minutes(self._last + timedelta(minutes=1), now))
                self._last = now

    def rewrite(self, minutes: int = SEED_MINUTES, metric: str | None = None) -> None:
        """Replace the last `minutes` of the series (or of one metric) with current levels."""
        self.tick()
        with self._lock:
            since = self._last - timedelta(minutes=minutes - 1)
            chosen = [s for s in self._series if metric is None or s.metric == metric]
            self._delete(chosen, since)
            self._put(chosen, self._minutes(since, self._last))

    def _run(self) -> None:
        while not self._stop.wait(5):
            self.tick()

    @staticmethod
    def _minutes(first: datetime, last: datetime) -> list[datetime]:
        count = int((last - first).total_seconds() // 60) + 1
        return [first + timedelta(minutes=i) for i in range(max(count, 0))]

    def _put(self, series: list[Series], minutes: list[datetime]) -> None:
        data_by_ns: dict[str, list[dict[str, Any]]] = {}
        for s in series:
            for when in minutes:
                value = s.value(when)
                if value is None:
                    continue
                data_by_ns.setdefault(s.namespace, []).append(
                    {
                        "MetricName": s.metric,
                        "Dimensions": [{"Name": k, "Value": v} for k, v in s.dimensions],
                        "Timestamp": when,
                        "Value": round(value, 2),
                        "Unit": s.unit,
                    }
                )
        for namespace, data in data_by_ns.items():
            for start in range(0, len(data), BATCH):
                self._cw.put_metric_data(
                    Namespace=namespace, MetricData=data[start : start + BATCH]
                )

    def _delete(self, series: list[Series], since: datetime) -> None:
        backend = cloudwatch_backends[DEFAULT_ACCOUNT_ID][self._region]
        cutoff = since.astimezone(UTC).replace(tzinfo=None)
        keys = {(s.namespace, s.metric, s.dimensions) for s in series}

        def doomed(datum: Any) -> bool:
            dims = tuple((d.name, d.value) for d in datum.dimensions)
            when = datum.timestamp
            when = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
            return (datum.namespace, datum.name, dims) in keys and when >= cutoff

        backend.metric_data[:] = [d for d in backend.metric_data if not doomed(d)]
