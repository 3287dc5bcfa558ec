"""The incidents of the diagnosis-heavy runbooks: Kafka consumer lag and an API error spike,
with what closes their loop (more context-engine tasks drain the lag, more api tasks bring
the 5xx share down); circuit breakers and request counters in `/metrics`; `/health/workers`;
latency that can be injected into each check (for bench/diagnosis_fanout.py)."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import psycopg
from moto.core.responses import BaseResponse
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sandbox.kafka_workers import KafkaWorkers
from sandbox.logs import LogFeed

if TYPE_CHECKING:
    from sandbox.aws import AwsSandbox
    from sandbox.metrics import ServiceMetrics

KAFKA_INCIDENT = "kafka-lag"
API_INCIDENT = "api-errors"
BREAKERS = ("openai", "salesforce", "context-engine")
BREAKER_VALUES = {"closed": 0, "open": 1, "half_open": 2}
API_CAUSES = ("capacity", "external", "database")
API_TASKS_NEEDED = 4  # below this many running api tasks, the capacity incident errors
REQUESTS_PER_TICK, TRAFFIC_TICK = 10, 0.25  # 40 requests a second
SLOW_QUERIES = (
    "SELECT pg_sleep(0.2) /* context-engine: load account signals for enrichment */",
    "SELECT count(*) FROM generate_series(1, 300000) /* context-engine: score signals */",
)
log = logging.getLogger("sandbox.diagnosis")
Reply = tuple[int, Any]


class DiagnosisSandbox(Collector):
    def __init__(self, kafka_bootstrap: str | None, database_url: str | None) -> None:
        self._bootstrap = kafka_bootstrap
        self._database_url = database_url
        self.incidents: dict[str, dict[str, Any]] = {}
        self.latency: dict[str, float] = {}
        self.breakers: dict[str, str] = dict.fromkeys(BREAKERS, "closed")
        self.kafka: KafkaWorkers | None = None
        self.logs: LogFeed | None = None
        self.aws: AwsSandbox | None = None
        self._metrics: Callable[[], ServiceMetrics] | None = None
        self._lock = threading.Lock()
        self._rng = random.Random(11)
        self._stop = threading.Event()
        self._traffic = threading.Thread(target=self._traffic_loop, name="api-traffic", daemon=True)
        self._original_call_action: Any = None

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self, aws: AwsSandbox | None, metrics: Callable[[], ServiceMetrics]) -> None:
        self.aws, self._metrics = aws, metrics
        if aws is not None:
            self.logs = LogFeed(aws.client, self.active)
            self.logs.start()
            self._patch_moto()
        if self._bootstrap:
            self.kafka = KafkaWorkers(self._bootstrap, self._context_engine_tasks)
            self.kafka.start()
        self._traffic.start()

    def stop(self) -> None:
        self._stop.set()
        for part in (self.kafka, self.logs):
            if part is not None:
                part.stop()
        if self._original_call_action is not None:
            BaseResponse.call_action = self._original_call_action  # type: ignore[method-assign]

    def reset(self) -> None:
        with self._lock:
            self.incidents.clear()
            self.latency.clear()
            self.breakers = dict.fromkeys(BREAKERS, "closed")
        if self.kafka is not None:
            self.kafka.reset()
        if self.logs is not None:
            self.logs.clear()

    def active(self) -> set[str]:
        with self._lock:
            return set(self.incidents)

    # ---- /metrics -------------------------------------------------------------------------

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "circuit_breaker_state",
            "Circuit breaker state by dependency: 0 closed, 1 open, 2 half-open",
            labels=["breaker"],
        )
        with self._lock:
            for name, state in self.breakers.items():
                family.add_metric([name], BREAKER_VALUES[state])
        yield family

    def _traffic_loop(self) -> None:
        while not self._stop.wait(TRAFFIC_TICK):
            if self._metrics is None:
                continue
            share = self.error_share()
            metrics = self._metrics()
            for _ in range(REQUESTS_PER_TICK):
                metrics.observe(503 if self._rng.random() < share else 200)

    def error_share(self) -> float:
        with self._lock:
            params = self.incidents.get(API_INCIDENT)
        if params is None:
            return 0.002
        cause = params["cause"]
        if cause == "capacity":
            return 0.18 if self._running("api") < API_TASKS_NEEDED else 0.003
        if cause == "external":
            return 0.07
        return 0.25

    # ---- ECS ------------------------------------------------------------------------------

    def _running(self, service: str) -> int:
        return self.aws.ecs.running(service) if self.aws is not None else 2

    def _context_engine_tasks(self) -> int:
        return self._running("context-engine")

    # ---- /health/workers --------------------------------------------------------------------

    def workers_health(self, _: Any = None) -> Reply:
        if self.kafka is None:
            stale = KAFKA_INCIDENT in self.active()
            body: dict[str, Any] = {"status": "stale" if stale else "healthy", "simulated": True}
        else:
            body = self.kafka.snapshot()
            stale = body["status"] == "stale"
        body["running_tasks"] = self._context_engine_tasks()
        return (503 if stale else 200), body

    # ---- incidents ----------------------------------------------------------------------------

    def inject_kafka(self, body: Any) -> Reply:
        """Body (all optional): produce_per_second, per_worker_per_second, backlog,
        dlq_messages, lag_threshold. Defaults: 40/s in, 15/s a worker, 1500 behind."""
        params = _numbers(
            body,
            produce_per_second=40.0,
            per_worker_per_second=15.0,
            backlog=1500,
            dlq_messages=25,
            lag_threshold=500,
        )
        with self._lock:
            self.incidents[KAFKA_INCIDENT] = params
        if self.kafka is not None:
            self.kafka.rates.produce_per_second = params["produce_per_second"]
            self.kafka.rates.per_worker_per_second = params["per_worker_per_second"]
            self.kafka.rates.lag_threshold = int(params["lag_threshold"])
            self.kafka.produce(int(params["backlog"]))
            self.kafka.produce_dlq(int(params["dlq_messages"]))
        if self.logs is not None:
            self.logs.backfill(KAFKA_INCIDENT)
        threading.Thread(target=self._slow_queries, name="slow-queries", daemon=True).start()
        return 200, self.snapshot()

    def heal_kafka(self, _: Any = None) -> Reply:
        with self._lock:
            self.incidents.pop(KAFKA_INCIDENT, None)
        if self.kafka is not None:
            defaults = self.kafka.default_rates
            self.kafka.rates.produce_per_second = defaults.produce_per_second
            self.kafka.rates.per_worker_per_second = defaults.per_worker_per_second
        return 200, self.snapshot()

    def inject_api(self, body: Any) -> Reply:
        """Body: {"cause": "capacity" | "external" | "database"} (default capacity)."""
        cause = (body or {}).get("cause", "capacity") if isinstance(body, dict) else "capacity"
        if cause not in API_CAUSES:
            return 400, {"error": f"cause must be one of {', '.join(API_CAUSES)}"}
        with self._lock:
            self.incidents[API_INCIDENT] = {"cause": cause}
            if cause == "external":
                self.breakers["openai"] = "open"
        if self.aws is not None:
            self.aws.ecs.set_health("api", 1)
            reason = "OutOfMemoryError: Container killed due to memory usage"
            self.aws.ecs.add_stopped("api", 2, reason)
        if self.logs is not None:
            self.logs.backfill(API_INCIDENT)
        return 200, self.snapshot()

    def heal_api(self, _: Any = None) -> Reply:
        with self._lock:
            self.incidents.pop(API_INCIDENT, None)
            self.breakers = dict.fromkeys(BREAKERS, "closed")
        if self.aws is not None:
            self.aws.ecs.set_health("api", 0)
        return 200, self.snapshot()

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

    # ---- latency injection ------------------------------------------------------------------

    def set_latency(self, body: Any) -> Reply:
        """Body: {"<check>": seconds}; checks: an HTTP path of the service (/metrics,
        /health/detailed, /health/workers) or an AWS service of moto (ecs, logs, cloudwatch)."""
        if not isinstance(body, dict) or not all(
            isinstance(v, int | float) and 0 <= v <= 60 for v in body.values()
        ):
            return 400, {"error": "body must map check names to seconds between 0 and 60"}
        with self._lock:
            self.latency = {str(k): float(v) for k, v in body.items()}
        return 200, {"latency": self.latency}

    def clear_latency(self, _: Any = None) -> Reply:
        with self._lock:
            self.latency.clear()
        return 200, {"latency": {}}

    def delay(self, key: str) -> None:
        seconds = self.latency.get(key, 0.0)
        if seconds:
            time.sleep(seconds)

    def _patch_moto(self) -> None:
        original = BaseResponse.call_action
        self._original_call_action = original
        sandbox = self

        def call_action(response: BaseResponse) -> Any:
            sandbox.delay(str(response.service_name))
            return original(response)

        BaseResponse.call_action = call_action  # type: ignore[method-assign,assignment]

    # ---- control ------------------------------------------------------------------------------

    def ecs_control(self, body: Any) -> Reply:
        seconds = (body or {}).get("task_start_seconds") if isinstance(body, dict) else None
        if not isinstance(seconds, int | float) or not 0 <= seconds <= 600:
            return 400, {"error": 'body must be {"task_start_seconds": 0..600}'}
        if self.aws is not None:
            self.aws.ecs.task_start_seconds = float(seconds)
        return 200, {"task_start_seconds": float(seconds)}

    def snapshot(self, _: Any = None) -> dict[str, Any]:
        with self._lock:
            state: dict[str, Any] = {
                "incidents": {k: dict(v) for k, v in self.incidents.items()},
                "breakers": dict(self.breakers),
                "latency": dict(self.latency),
            }
        state["running"] = {s: self._running(s) for s in ("api", "context-engine")}
        state["error_share"] = self.error_share()
        if self.kafka is not None:
            state["kafka"] = self.kafka.snapshot()
        return state

    def state_reply(self, _: Any = None) -> Reply:
        return 200, self.snapshot()


def _numbers(body: Any, **defaults: float) -> dict[str, Any]:
    given = body if isinstance(body, dict) else {}
    values: dict[str, Any] = {}
    for name, default in defaults.items():
        value = given.get(name, default)
        if not isinstance(value, int | float) or value < 0:
            value = default
        values[name] = value
    return values


ROUTES: dict[tuple[str, str], Callable[[DiagnosisSandbox, Any], Reply]] = {
    ("GET", "/health/workers"): DiagnosisSandbox.workers_health,
    ("POST", "/control/incidents/kafka-lag"): DiagnosisSandbox.inject_kafka,
    ("DELETE", "/control/incidents/kafka-lag"): DiagnosisSandbox.heal_kafka,
    ("POST", "/control/incidents/api-errors"): DiagnosisSandbox.inject_api,
    ("DELETE", "/control/incidents/api-errors"): DiagnosisSandbox.heal_api,
    ("POST", "/control/latency"): DiagnosisSandbox.set_latency,
    ("DELETE", "/control/latency"): DiagnosisSandbox.clear_latency,
    ("POST", "/control/ecs"): DiagnosisSandbox.ecs_control,
    ("GET", "/control/diagnosis"): DiagnosisSandbox.state_reply,
}
