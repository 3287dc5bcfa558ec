"""Faults: the systems a diagnosis reads are down (Redis, Kafka, PostgreSQL, the service's
health and metrics endpoints: each pointed at a closed port of a worker of its own). Each
check reports `unavailable` with the reason, the run goes on and ends cleanly, and nothing
is changed."""

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import free_ports
from tests.reliability.conftest import WORKER_ACCESS_KEY, Reliability, queue_name
from tests.reliability.harness import WorkerProcess
from tests.reliability.test_bad_input import MUTATIONS
from workflows.models import RunbookResult
from workflows.registry import PROCEDURES

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def dependencies_down(reliability: Reliability) -> Iterator[tuple[str, WorkerProcess]]:
    """A worker whose Redis, Kafka, PostgreSQL and service endpoints answer nothing."""
    closed = free_ports(("redis", "kafka", "postgres", "api"))  # nothing listens there
    queue = queue_name("faults-down")
    worker = reliability.worker(
        queue,
        REDIS_URL=f"redis://127.0.0.1:{closed['redis']}/0",
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed['kafka']}",
        DATABASE_URL=f"postgresql://runbook@127.0.0.1:{closed['postgres']}/revenue_context",
        API_BASE_URL=f"http://127.0.0.1:{closed['api']}",
    ).go()
    yield queue, worker
    worker.stop()


async def run(rel: Reliability, queue: str, workflow_type: str, inp: dict) -> RunbookResult:
    procedure = next(p.name for p in PROCEDURES.values() if p.workflow_type == workflow_type)
    handle = await rel.start(queue, procedure, **inp)
    return await asyncio.wait_for(handle.result(), timeout=240)


def verdicts(result: RunbookResult, verdict: str) -> dict[str, str]:
    return {f.check: f.summary for f in result.findings if f.verdict == verdict}


def unavailable(result: RunbookResult) -> dict[str, str]:
    return verdicts(result, "unavailable")


async def test_triage_reports_every_system_down_and_completes(
    reliability: Reliability, dependencies_down: tuple[str, WorkerProcess]
) -> None:
    queue, _ = dependencies_down
    recorder = reliability.recorder()
    recorder.restart()
    result = await run(reliability, queue, "Triage", {"check_timeout_seconds": 5})
    assert result.outcome == "completed", result.summary
    down = unavailable(result)
    assert "Connection refused" in down["database connections"]
    assert "transport failure" in down["consumer lag"]
    failing = verdicts(result, "failing")  # an endpoint that does not answer is a finding
    assert {"/health/detailed", "/health/workers"} <= set(failing), result.findings
    assert not [c for c in recorder.calls(WORKER_ACCESS_KEY) if c.action in MUTATIONS]


async def test_db_failover_dry_run_goes_on_with_checks_unavailable(
    reliability: Reliability, dependencies_down: tuple[str, WorkerProcess]
) -> None:
    queue, _ = dependencies_down
    httpx.post(f"{reliability.sandbox_url}/control/reset", timeout=10).raise_for_status()
    result = await run(reliability, queue, "DatabaseFailover", {"dry_run": True})
    assert result.outcome == "dry_run"
    assert "Connection refused" in unavailable(result)["idle in transaction"]
    assert "/health/detailed" in verdicts(result, "failing")
    assert "rds instance" in verdicts(result, "ok")  # AWS still answers: the plan uses it
    assert result.plan and "force-failover" in result.plan[0]


async def test_api_errors_dry_run_goes_on_with_redis_and_metrics_down(
    reliability: Reliability, dependencies_down: tuple[str, WorkerProcess]
) -> None:
    queue, _ = dependencies_down
    inp = {"dry_run": True, "check_timeout_seconds": 5, "error_window_seconds": 1}
    result = await run(reliability, queue, "ApiErrorRateSpike", inp)
    assert result.outcome in ("dry_run", "completed"), result.summary
    down = unavailable(result)
    assert {"redis", "circuit breakers", "5xx rate"} <= set(down), result.findings
    assert all(down.values()), down  # each with its reason
