"""Fake activities for the kafka-lag, api-errors and triage workflow tests: consumer lag and
the DLQ, ECS tasks and scaling, logs, slow queries, Redis, the service's /metrics and health.
Same names and models as the real ones (tested against the broker, Valkey, PostgreSQL and
moto in tests/activities/test_kafka_ecs_logs_metrics.py), scripted answers, recorded calls.
The gate's (Slack, PagerDuty, approvals, incident log) come from FakeSystems."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.acm import Certificate, Certificates, ListCertificatesRequest
from activities.cloudwatch import MetricRequest, MetricSummary
from activities.ecs import (
    EcsService,
    EcsTask,
    ScaleRequest,
    ScaleResult,
    ServicesRequest,
    ServicesResult,
    TasksRequest,
    TasksResult,
    WaitRunningRequest,
    WaitRunningResult,
)
from activities.health import HealthRequest, HealthResult, WaitHealthyRequest
from activities.kafka import (
    DlqMessage,
    DlqPeekRequest,
    DlqPeekResult,
    LagRequest,
    LagResult,
    PartitionLag,
)
from activities.logs import LogErrorsRequest, LogErrorsResult
from activities.postgres_queries import (
    ConnectionsRequest,
    ConnectionSummary,
    SlowQueriesRequest,
    SlowQueriesResult,
    SlowQuery,
)
from activities.prometheus import (
    BreakersRequest,
    CircuitBreakers,
    ErrorRate,
    ErrorRateRequest,
)
from activities.redis_info import RedisStats, RedisStatsRequest
from activities.spend import SpendReading, SpendReadRequest
from tests.fakes.systems import FakeSystems


def lag_result(
    total: int, rate: float | None = None, produce: float = 40, consume: float = 30
) -> LagResult:
    per = total // 6
    parts = [
        PartitionLag(
            topic="signals.raw", partition=p, committed=100, high_watermark=100 + per, lag=per
        )
        for p in range(6)
    ]
    sampled = rate is not None
    return LagResult(
        group="context_engine_group",
        partitions=parts,
        total_lag=per * 6,
        by_topic={"signals.raw": per * 6},
        sampled_seconds=5 if sampled else 0,
        produce_rate=produce if sampled else None,
        consume_rate=consume if sampled else None,
        lag_rate=rate,
    )


@dataclass
class FakeLagAndErrors:
    gate: FakeSystems
    # Lag answers in order (the last one repeats); None: the broker is down.
    lags: list[LagResult | None] = field(default_factory=lambda: [lag_result(3000, 10.0)])
    desired: dict[str, int] = field(default_factory=lambda: {"api": 2, "context-engine": 2})
    unhealthy_api_tasks: int = 1
    cpu: float = 25.0
    breakers_open: list[str] = field(default_factory=list)
    error_shares: list[float] = field(default_factory=lambda: [0.18, 0.003])
    health_status: dict[str, int] = field(
        default_factory=lambda: {"/health/detailed": 200, "/health/workers": 503}
    )
    redis_down: bool = False
    # Tasks stopped out of memory lately, by service (api-errors then points at high-memory).
    oom_stopped: dict[str, int] = field(default_factory=dict)
    # ERROR lines a log group answers with (12 when not listed); database connections open.
    log_errors: dict[str, int] = field(default_factory=dict)
    connections: int = 12
    # A body for a health path that does not answer 200 (e.g. /health on a bad deploy).
    health_body: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Today's LLM spend and the budget in force (USD); ACM certificates.
    spend: float = 10.0
    budget: float = 100.0
    certificates: list[Certificate] = field(default_factory=list)
    # ECS refuses the scale for good (an AccessDenied, a service that vanished).
    scale_error: str | None = None
    # ECS knows none of the services asked for.
    services_missing: bool = False
    calls: list[str] = field(default_factory=list)

    def _next(self, items: list[Any]) -> Any:
        return items.pop(0) if len(items) > 1 else items[0]

    def activities(self) -> list[Any]:
        return [*self._mine(), *self.gate.gate_activities()]

    def _service(self, name: str) -> EcsService:
        want = self.desired.get(name, 1)
        return EcsService(
            name=name, status="ACTIVE", desired_count=want, running_count=want, pending_count=0
        )

    def _mine(self) -> list[Callable[..., Any]]:
        @activity.defn(name="kafka.consumer_lag")
        async def consumer_lag(req: LagRequest) -> LagResult:
            self.calls.append(f"lag {req.sample_seconds:g}")
            lag = self._next(self.lags)
            if lag is None:
                raise ApplicationError(
                    "Kafka: KafkaError{code=_TRANSPORT} broker down", type="KafkaError"
                )
            return lag

        @activity.defn(name="kafka.peek_dlq")
        async def peek_dlq(req: DlqPeekRequest) -> DlqPeekResult:
            self.calls.append("dlq")
            msg = DlqMessage(
                partition=0,
                offset=0,
                timestamp=datetime(2026, 1, 1, tzinfo=UTC),
                key="acct-1",
                headers={"x-error-reason": "SchemaValidationError"},
                error_reason="SchemaValidationError",
                payload="{...",
                payload_bytes=400,
            )
            return DlqPeekResult(
                topic=req.topic,
                exists=True,
                total_messages=25,
                messages=[msg],
                reasons={"SchemaValidationError": 1},
            )

        @activity.defn(name="ecs.describe_services")
        async def describe_services(req: ServicesRequest) -> ServicesResult:
            self.calls.append("describe_services")
            names = req.services or list(self.desired)
            if self.services_missing:
                return ServicesResult(cluster=req.cluster, services=[], missing=names)
            return ServicesResult(cluster=req.cluster, services=[self._service(n) for n in names])

        @activity.defn(name="ecs.list_tasks")
        async def list_tasks(req: TasksRequest) -> TasksResult:
            self.calls.append("list_tasks")
            tasks = [
                EcsTask(
                    task_arn=f"arn:task/{i}",
                    task_id=str(i),
                    last_status="RUNNING",
                    desired_status="RUNNING",
                    health_status="UNHEALTHY" if i < self.unhealthy_api_tasks else "HEALTHY",
                )
                for i in range(self.desired.get(req.service, 1))
            ]
            tasks += [
                EcsTask(
                    task_arn=f"arn:task/oom-{i}",
                    task_id=f"oom-{i}",
                    last_status="STOPPED",
                    desired_status="STOPPED",
                    stopped_reason="OutOfMemoryError: Container killed due to memory usage",
                )
                for i in range(self.oom_stopped.get(req.service, 0))
            ]
            return TasksResult(cluster=req.cluster, service=req.service, tasks=tasks)

        @activity.defn(name="ecs.scale_service")
        async def scale(req: ScaleRequest) -> ScaleResult:
            self.calls.append(f"scale {req.service} {req.desired_count}")
            if self.scale_error:
                raise ApplicationError(self.scale_error, type="EcsRefused", non_retryable=True)
            before = self.desired.get(req.service, 1)
            self.desired[req.service] = req.desired_count
            return ScaleResult(
                service=req.service,
                previous_desired=before,
                desired_count=req.desired_count,
                changed=True,
                reason=f"desired count {before} -> {req.desired_count}",
            )

        @activity.defn(name="ecs.wait_running")
        async def wait_running(req: WaitRunningRequest) -> WaitRunningResult:
            self.calls.append("wait_running")
            want = self.desired.get(req.service, 1)
            return WaitRunningResult(
                service=req.service,
                running_count=want,
                desired_count=want,
                waited_seconds=20,
                polls=4,
            )

        @activity.defn(name="health.check")
        async def check(req: HealthRequest) -> HealthResult:
            self.calls.append(f"health {req.path}")
            code = self.health_status.get(req.path, 200)
            body = self.health_body.get(req.path)
            return HealthResult(
                path=req.path, ok=code == 200, status_code=code, latency_ms=3, body=body
            )

        @activity.defn(name="health.wait_healthy")
        async def wait_healthy(req: WaitHealthyRequest) -> HealthResult:
            self.calls.append("wait_healthy")
            return HealthResult(path=req.path, ok=True, status_code=200, latency_ms=3)

        @activity.defn(name="logs.recent_errors")
        async def recent_errors(req: LogErrorsRequest) -> LogErrorsResult:
            self.calls.append(f"logs {req.log_group}")
            by_term = {t: self.log_errors.get(req.log_group, 12) for t in req.terms}
            return LogErrorsResult(
                log_group=req.log_group,
                minutes=req.minutes,
                total=sum(by_term.values()),
                by_term=by_term,
                top_messages={"ERROR signal_processor: failed": 12},
                samples=[],
            )

        @activity.defn(name="postgres.slow_queries")
        async def slow_queries(req: SlowQueriesRequest) -> SlowQueriesResult:
            self.calls.append("slow_queries")
            return SlowQueriesResult(
                available=True,
                queries=[
                    SlowQuery(
                        query="SELECT pg_sleep($1)",
                        mean_exec_time_ms=200,
                        calls=3,
                        total_exec_time_ms=600,
                    )
                ],
            )

        @activity.defn(name="postgres.connections")
        async def connections(req: ConnectionsRequest) -> ConnectionSummary:
            self.calls.append("connections")
            total = self.connections
            return ConnectionSummary(total=total, by_state={"idle": total}, long_running=[])

        @activity.defn(name="cloudwatch.metric_statistics")
        async def metric(req: MetricRequest) -> MetricSummary:
            self.calls.append(f"metric {req.metric_name}")
            return MetricSummary(
                metric_name=req.metric_name,
                datapoints=[],
                latest={"Average": self.cpu},
                peak={"Average": self.cpu},
            )

        @activity.defn(name="redis.info_stats")
        async def info_stats(req: RedisStatsRequest) -> RedisStats:
            self.calls.append("redis")
            if self.redis_down:
                raise ApplicationError(
                    "Redis: ConnectionError: Error 111 connecting", type="RedisError"
                )
            return RedisStats(
                keyspace_hits=90,
                keyspace_misses=10,
                hit_rate=0.9,
                rejected_connections=0,
                ops_per_sec=50,
            )

        @activity.defn(name="prometheus.circuit_breakers")
        async def breakers(req: BreakersRequest) -> CircuitBreakers:
            self.calls.append("breakers")
            states = {"openai": "closed", "salesforce": "closed"} | dict.fromkeys(
                self.breakers_open, "open"
            )
            return CircuitBreakers(states=states, open=sorted(self.breakers_open), exported=True)

        @activity.defn(name="prometheus.error_rate")
        async def error_rate(req: ErrorRateRequest) -> ErrorRate:
            share = self._next(self.error_shares)
            self.calls.append(f"error_rate {share}")
            return ErrorRate(
                window_seconds=req.window_seconds, requests=400, errors=400 * share, share=share
            )

        @activity.defn(name="spend_watch.read")
        async def spend(req: SpendReadRequest) -> SpendReading:
            self.calls.append("spend")
            return SpendReading(
                date=req.date,
                key=f"llm:spend:global:{req.date}",
                spend=self.spend,
                budget=self.budget,
                budget_source="metrics",
            )

        @activity.defn(name="acm.list_certificates")
        async def certificates(req: ListCertificatesRequest) -> Certificates:
            self.calls.append("certificates")
            return Certificates(certificates=self.certificates)

        return [
            spend,
            certificates,
            consumer_lag,
            peek_dlq,
            describe_services,
            list_tasks,
            scale,
            wait_running,
            check,
            wait_healthy,
            recent_errors,
            slow_queries,
            connections,
            metric,
            info_stats,
            breakers,
            error_rate,
        ]
