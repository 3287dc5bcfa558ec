"""kafka-lag: signals arrive faster than the context-engine's workers consume them, the
consumer group falls behind, messages land in the DLQ, slow queries top pg_stat_statements;
more context-engine tasks in ECS drain the lag (sandbox/kafka_workers.py follows ECS)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg

from sandbox.replies import numbers
from sandbox.systems import Systems

NAME = "kafka-lag"
SLOW_QUERIES = (
    "SELECT pg_sleep(0.2) /* context-engine: load account signals for enrichment */",
    "SELECT count(*) FROM generate_series(1, 300000) /* context-engine: score signals */",
)
log = logging.getLogger("sandbox.kafka_lag")


class KafkaLag:
    name = NAME

    def __init__(self, systems: Systems, database_url: str | None) -> None:
        self.systems = systems
        self._database_url = database_url
        self._lock = threading.Lock()
        self._params: dict[str, Any] | None = None

    def params(self) -> dict[str, Any] | None:
        """What it was injected with, while it lasts."""
        with self._lock:
            return dict(self._params) if self._params is not None else None

    def active(self) -> bool:
        with self._lock:
            return self._params is not None

    def reset(self) -> None:
        with self._lock:
            self._params = None

    def inject(self, body: Any) -> None:
        """Body (all optional): produce_per_second, per_worker_per_second, backlog,
        dlq_messages, lag_threshold. Defaults: 40/s in, 15/s a worker, 1500 behind."""
        params = numbers(
            body,
            produce_per_second=40.0,
            per_worker_per_second=15.0,
            backlog=1500,
            dlq_messages=25,
            lag_threshold=500,
        )
        with self._lock:
            self._params = params
        kafka = self.systems.kafka
        if kafka is not None:
            kafka.rates.produce_per_second = params["produce_per_second"]
            kafka.rates.per_worker_per_second = params["per_worker_per_second"]
            kafka.rates.lag_threshold = int(params["lag_threshold"])
            kafka.produce(int(params["backlog"]))
            kafka.produce_dlq(int(params["dlq_messages"]))
        self.systems.backfill_logs(NAME)
        threading.Thread(target=self._slow_queries, name="slow-queries", daemon=True).start()

    def heal(self) -> None:
        with self._lock:
            self._params = None
        kafka = self.systems.kafka
        if kafka is not None:
            kafka.rates.produce_per_second = kafka.default_rates.produce_per_second
            kafka.rates.per_worker_per_second = kafka.default_rates.per_worker_per_second

    def workers_health(self) -> tuple[int, dict[str, Any]]:
        """`/health/workers`: 503 `stale` while the group is behind."""
        if self.systems.kafka is None:
            stale = self.active()
            body: dict[str, Any] = {"status": "stale" if stale else "healthy", "simulated": True}
        else:
            body = self.systems.kafka.snapshot()
            stale = body["status"] == "stale"
        body["running_tasks"] = self.systems.running("context-engine")
        return (503 if stale else 200), body

    def _slow_queries(self) -> None:
        """Statements slow enough to top pg_stat_statements (runbook.md 2.4)."""
        if not self._database_url:
            return
        try:
            with psycopg.connect(self._database_url, connect_timeout=3, autocommit=True) as conn:
                for _ in range(3):
                    for sql in SLOW_QUERIES:
                        conn.execute(sql)
        except psycopg.Error as err:
            log.warning("slow queries not run: %s", err)
