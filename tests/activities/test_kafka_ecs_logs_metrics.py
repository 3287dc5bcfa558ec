"""The kafka-lag / api-errors / triage activities against real parts: the Kafka broker, Valkey,
PostgreSQL, moto (ECS, Logs, CloudWatch) and the sandbox's consumers, logs and /metrics."""

import contextlib
import threading
import time

import boto3
import httpx
import psycopg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.ecs import (
    EcsActivities,
    ScaleRequest,
    ServicesRequest,
    TasksRequest,
    WaitRunningRequest,
)
from activities.kafka import DlqPeekRequest, KafkaActivities, LagRequest, LagResult
from activities.logs import LogErrorsRequest, LogsActivities
from activities.postgres_queries import (
    ConnectionsRequest,
    ConnectionSummary,
    QueryActivities,
    SlowQueriesRequest,
)
from activities.prometheus import (
    BreakersRequest,
    ErrorRateRequest,
    PrometheusActivities,
    ScrapeRequest,
)
from activities.redis_info import RedisActivities, RedisStatsRequest
from tests.temporal_env import run_activity, wait_until

pytestmark = pytest.mark.timeout(120)
FAST_KAFKA = {"produce_per_second": 200, "per_worker_per_second": 60, "backlog": 1200}


def test_ecs_services_are_seeded_and_scaling_is_idempotent_and_capped(
    sandbox: httpx.Client, ecs: EcsActivities
) -> None:
    seeded = run_activity(ecs.describe_services, ServicesRequest())
    counts = {s.name: (s.running_count, s.desired_count) for s in seeded.services}
    assert counts == {"api": (2, 2), "context-engine": (2, 2), "orchestration-engine": (1, 1)}
    assert seeded.services[0].task_definition.endswith("task-definition/prod-api:3")  # type: ignore[union-attr]

    ask = ScaleRequest(service="context-engine", desired_count=4, max_count=6)
    first = run_activity(ecs.scale_service, ask)
    pending = run_activity(
        ecs.describe_services, ServicesRequest(services=["context-engine"])
    ).services[0]
    again = run_activity(ecs.scale_service, ask)  # a retry
    down = run_activity(ecs.scale_service, ask.model_copy(update={"desired_count": 1}))
    assert first.changed and (first.previous_desired, first.desired_count) == (2, 4)
    # New tasks take a while to run (a loaded machine may already see some of them running).
    assert pending.running_count + pending.pending_count == 4 and pending.running_count >= 2
    assert not again.changed and not down.changed and "not scaling down" in down.reason
    done = run_activity(
        ecs.wait_running, WaitRunningRequest(service="context-engine", poll_seconds=0.1)
    )
    assert done.running_count == 4 and done.desired_count == 4

    with pytest.raises(ApplicationError) as capped:
        run_activity(ecs.scale_service, ask.model_copy(update={"desired_count": 7}))
    assert capped.value.non_retryable and "allowed: 0 to 6" in str(capped.value)
    with pytest.raises(ApplicationError) as unknown:
        run_activity(ecs.scale_service, ask.model_copy(update={"service": "nope"}))
    assert unknown.value.non_retryable and "api, context-engine" in str(unknown.value)


def test_api_incident_shows_unhealthy_and_oom_killed_tasks(
    sandbox: httpx.Client, ecs: EcsActivities
) -> None:
    sandbox.post("/control/incidents/api-errors").raise_for_status()
    tasks = run_activity(ecs.list_tasks, TasksRequest(service="api"))
    running = [t for t in tasks.tasks if t.last_status == "RUNNING"]
    stopped = [t for t in tasks.tasks if t.last_status == "STOPPED"]
    assert len(running) == 2 and [t.health_status for t in running].count("UNHEALTHY") == 1
    assert len(stopped) == 2 and all(
        "Essential container in task exited" in (t.stopped_reason or "") for t in stopped
    )
    assert stopped[0].containers[0].exit_code == 1
    other = run_activity(ecs.list_tasks, TasksRequest(service="context-engine"))
    assert len(other.tasks) == 2  # filtered by service


def test_consumer_lag_grows_then_drains_when_context_engine_scales(
    sandbox: httpx.Client, ecs: EcsActivities, kafka_bootstrap: str
) -> None:
    """Directions, not figures: how fast the sandbox's workers consume depends on the
    machine, but 2 of them fall behind what arrives and 5 catch up."""
    kafka = KafkaActivities(kafka_bootstrap)
    ask = LagRequest(topics=["signals.raw"], sample_seconds=1.5)
    sandbox.post("/control/incidents/kafka-lag", json=FAST_KAFKA).raise_for_status()
    behind = run_activity(kafka.consumer_lag, ask)
    assert len(behind.partitions) == 6 and behind.total_lag > 1000
    assert behind.produce_rate and behind.consume_rate is not None
    assert behind.consume_rate < behind.produce_rate and behind.lag_rate and behind.lag_rate > 0
    assert sandbox.get("/health/workers").status_code == 503

    run_activity(ecs.scale_service, ScaleRequest(service="context-engine", desired_count=5))
    run_activity(ecs.wait_running, WaitRunningRequest(service="context-engine", poll_seconds=0.1))

    def falling() -> LagResult | None:
        lag = run_activity(kafka.consumer_lag, ask)
        return lag if lag.lag_rate is not None and lag.lag_rate < 0 else None

    draining = wait_until(falling, "the lag to fall once the new workers joined the group")
    assert draining.consume_rate and draining.produce_rate
    assert draining.consume_rate > draining.produce_rate


def test_dlq_peek_reads_from_the_beginning_without_committing(
    sandbox: httpx.Client, kafka_bootstrap: str
) -> None:
    kafka = KafkaActivities(kafka_bootstrap)
    sandbox.post(
        "/control/incidents/kafka-lag", json={**FAST_KAFKA, "backlog": 0}
    ).raise_for_status()
    first = run_activity(kafka.peek_dlq, DlqPeekRequest(payload_chars=50))
    second = run_activity(kafka.peek_dlq, DlqPeekRequest(payload_chars=50))
    assert first.total_messages >= 25 and len(first.messages) == 10
    assert (
        [m.offset for m in first.messages] == list(range(10)) == [m.offset for m in second.messages]
    )
    message = first.messages[0]
    assert message.error_reason and message.error_reason.startswith("SchemaValidationError")
    assert message.headers["x-original-topic"] == "signals.raw" and message.key
    assert len(message.payload) <= 51 and message.payload_bytes > 400
    assert sum(first.reasons.values()) == 10
    committed = KafkaActivities(kafka_bootstrap)._committed(
        LagRequest(group="runbook-dlq-peek", topics=["signals.raw.dlq"], sample_seconds=0)
    )
    assert all(offset is None for offset in committed.values())
    missing = run_activity(kafka.peek_dlq, DlqPeekRequest(topic="no.such.topic"))
    assert not missing.exists and missing.messages == []


def test_broker_down_is_an_error_not_a_hang() -> None:
    kafka = KafkaActivities("127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(ApplicationError) as err:
        run_activity(kafka.consumer_lag, LagRequest(topics=[], sample_seconds=0, timeout_seconds=2))
    # Well within the client's own 60 s default: the request's 2 s bound is what ended it.
    assert "Kafka" in str(err.value) and time.monotonic() - started < 45


def test_recent_errors_count_error_and_critical_lines(
    sandbox: httpx.Client, aws_env: dict[str, str]
) -> None:
    logs = LogsActivities(boto3.client("logs"))
    ask = LogErrorsRequest(log_group="/ecs/production/api", terms=["ERROR", "CRITICAL"])
    quiet = run_activity(logs.recent_errors, ask)
    sandbox.post("/control/incidents/api-errors").raise_for_status()
    loud = run_activity(logs.recent_errors, ask)
    assert loud.by_term["ERROR"] > quiet.by_term["ERROR"] and loud.by_term["CRITICAL"] > 0
    assert loud.samples and any("container exited" in m for m in loud.top_messages)
    assert all(("ERROR" in s.message or "CRITICAL" in s.message) for s in loud.samples)
    with pytest.raises(ApplicationError) as missing:
        run_activity(
            logs.recent_errors, ask.model_copy(update={"log_group": "/ecs/production/nope"})
        )
    assert missing.value.non_retryable and "/ecs/production/nope" in str(missing.value)


def test_redis_info_stats_report_hit_rate(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.set("triage:probe", "1")
    client.get("triage:probe")
    client.get("triage:missing")
    stats = run_activity(RedisActivities(redis_url).info_stats, RedisStatsRequest())
    assert stats.keyspace_hits >= 1 and stats.keyspace_misses >= 1
    assert stats.hit_rate is not None and 0 < stats.hit_rate < 1
    with pytest.raises(ApplicationError) as down:
        run_activity(
            RedisActivities("redis://127.0.0.1:9/0").info_stats,
            RedisStatsRequest(timeout_seconds=1),
        )
    assert "ConnectionError" in str(down.value)


async def test_breakers_and_5xx_share_from_metrics(sandbox: httpx.Client, sandbox_url: str) -> None:
    async with httpx.AsyncClient() as http:
        prom = PrometheusActivities(sandbox_url, http)
        env = ActivityEnvironment()
        calm = await env.run(prom.error_rate, ErrorRateRequest(window_seconds=1))
        sandbox.post("/control/incidents/api-errors", json={"cause": "external"}).raise_for_status()
        breakers = await env.run(prom.circuit_breakers, BreakersRequest())
        sandbox.post("/control/incidents/api-errors", json={"cause": "capacity"}).raise_for_status()
        spiking = await env.run(prom.error_rate, ErrorRateRequest(window_seconds=1.5))
        scraped = await env.run(prom.scrape, ScrapeRequest(families=["http_requests", "nope"]))
    assert calm.share is not None and calm.share < 0.05 and calm.requests >= 20
    assert breakers.open == ["openai"] and breakers.states["salesforce"] == "closed"
    assert spiking.share is not None and spiking.share > 0.08
    assert scraped.missing == ["nope"] and scraped.families["http_requests"]


def test_slow_queries_and_long_running_queries(sandbox: httpx.Client, database_url: str) -> None:
    queries = QueryActivities(database_url)
    sandbox.post(
        "/control/incidents/kafka-lag", json={**FAST_KAFKA, "backlog": 0}
    ).raise_for_status()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_sleep(0.3)")  # a slow statement that completed

    long_running = ConnectionsRequest(long_running_seconds=0.5)

    def sleeper() -> None:  # one that runs until the test has seen it, then is cancelled
        with (
            contextlib.suppress(psycopg.errors.QueryCanceled),
            psycopg.connect(database_url, application_name="triage-test") as conn,
        ):
            conn.execute("SELECT pg_sleep(120)")

    thread = threading.Thread(target=sleeper)
    thread.start()
    try:

        def seen() -> ConnectionSummary | None:
            conns = run_activity(queries.connections, long_running)
            mine = [q for q in conns.long_running if q.application_name == "triage-test"]
            return conns if mine else None

        conns = wait_until(seen, "the running query among the long-running ones")
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'triage-test'"
            )
        thread.join()
    slow = run_activity(queries.slow_queries, SlowQueriesRequest(limit=10))
    assert conns.total >= 2 and conns.by_state.get("active", 0) >= 1
    assert slow.available and len(slow.queries) <= 10
    assert any("pg_sleep" in q.query for q in slow.queries)
    means = [q.mean_exec_time_ms for q in slow.queries]
    assert means == sorted(means, reverse=True)
