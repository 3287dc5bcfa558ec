"""The worker's metrics endpoint: the SDK's metrics and the runbooks' own, after a scenario on
the time-skipping server with fake activities (one approved failover whose Slack fails, one
gate nobody answers, one workflow task that fails once, one activity retried past the limit).
"""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner

from settings import metrics_runtime
from tests.conftest import free_ports
from tests.fakes.approvers import signed, write_roster
from tests.fakes.systems import FakeSystems
from tests.temporal_env import eventually, gate_open, running, start, until
from workflows import metrics
from workflows.db_failover import DatabaseFailover, DbFailoverInput

pytestmark = pytest.mark.timeout(180)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s series whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


_task_failed_once: set[str] = set()


@activity.defn(name="metrics-probe.flaky")
async def flaky() -> int:
    if activity.info().attempt <= metrics.ATTEMPT_LIMIT:
        raise RuntimeError("not yet")
    return activity.info().attempt


@workflow.defn(name="MetricsProbe")
class MetricsProbe:
    """Its first workflow task fails (as a non-deterministic one would); its activity
    succeeds only past the attempts limit."""

    @workflow.run
    async def run(self) -> int:
        if workflow.info().workflow_id not in _task_failed_once:
            _task_failed_once.add(workflow.info().workflow_id)
            raise RuntimeError("workflow task fails once")
        return await workflow.execute_activity(
            flaky,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=10)),
        )


@dataclass
class Scenario:
    url: str
    before: Samples
    after: Samples


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient() as http:
        return parse((await http.get(url, timeout=10)).raise_for_status().text)


@pytest.fixture(scope="module")
async def scenario(
    ts_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Scenario]:
    """The scenario once for the module, scraped before and after; its worker still polls."""
    port = free_ports(("metrics",))["metrics"]
    url = f"http://127.0.0.1:{port}/metrics"
    client = await Client.connect(
        ts_env.client.service_client.config.target_host,
        namespace=ts_env.client.namespace,
        data_converter=pydantic_data_converter,
        runtime=metrics_runtime(f"127.0.0.1:{port}"),
    )
    # The worker on the client whose runtime serves the metrics.
    env = WorkflowEnvironment.from_client(client)
    fakes = FakeSystems(write_roster(tmp_path_factory.mktemp("roster")), notify_fails=True)
    unsandboxed = UnsandboxedWorkflowRunner()
    async with (
        running(env, [DatabaseFailover], fakes.activities(), workflow_runner=unsandboxed) as queue,
        # The production interceptors want a runbook's input: the probe has none.
        running(
            env,
            [MetricsProbe],
            [flaky],
            interceptors=[metrics.ActivityAttemptsInterceptor()],
            workflow_runner=unsandboxed,
        ) as probe_queue,
    ):
        before = await eventually(lambda: scrape(url), "the metrics endpoint")
        # Started and awaited through the test server's own client, which skips time.
        approved = await start(ts_env, queue, DbFailoverInput(requested_by="alice"))
        await until(approved, gate_open)
        await approved.execute_update(DatabaseFailover.approve, await signed(approved, "bob"))
        unanswered = await start(
            ts_env, queue, DbFailoverInput(requested_by="alice", approval_timeout_seconds=60)
        )
        probe = await ts_env.client.start_workflow(
            MetricsProbe.run, id=f"metrics-probe/{uuid.uuid4()}", task_queue=probe_queue
        )
        assert await probe.result() == metrics.ATTEMPT_LIMIT + 1
        assert (await approved.result()).outcome == "completed"
        assert (await unanswered.result()).outcome == "not_approved"
        # Metrics reach the endpoint a little after the run's tasks complete.
        after = await eventually(
            lambda: _when_counted(url), "the runs' end counted on the endpoint"
        )
        yield Scenario(url, before, after)


async def _when_counted(url: str) -> Samples | None:
    samples = await scrape(url)
    return samples if value(samples, f"{metrics.RUNS_FINISHED}_total") >= 2 else None


def test_the_runbooks_metrics_count_the_scenario(scenario: Scenario) -> None:
    s, procedure = scenario.after, "db-failover"
    assert value(s, f"{metrics.RUNS_STARTED}_total", procedure=procedure) == 2
    finished = f"{metrics.RUNS_FINISHED}_total"
    assert value(s, finished, procedure=procedure, outcome="completed") == 1
    assert value(s, finished, procedure=procedure, outcome="not_approved") == 1
    # Both gates opened at on-call; the unanswered one escalated, then timed out.
    entered, left = f"{metrics.GATE_LEVELS_ENTERED}_total", f"{metrics.GATE_LEVELS_LEFT}_total"
    assert value(s, entered, level="on-call") == 2 and value(s, left, level="on-call") == 2
    assert value(s, entered) == value(s, left) > 2  # nothing waits any more
    assert value(s, f"{metrics.GATES_TIMED_OUT}_total", procedure=procedure) == 1
    decisions = f"{metrics.GATE_DECISION_SECONDS}_count"
    assert value(s, decisions, procedure=procedure, outcome="approved") == 1
    assert value(s, decisions) == 1  # a timed-out gate took no decision
    assert value(s, f"{metrics.APPROVAL_TO_ACTION_SECONDS}_count", procedure=procedure) == 1
    failed = f"{metrics.NOTIFICATIONS_FAILED}_total"
    assert value(s, failed, channel="slack", kind="approval_request") == 2
    assert value(s, failed, channel="slack", kind="escalation") == 1
    past_limit = f"{metrics.ACTIVITY_ATTEMPTS_PAST_LIMIT}_total"
    assert value(s, past_limit, activity_type="metrics-probe.flaky") == 1
    assert value(s, past_limit, activity_type="rds.force_failover") == 0


def test_the_sdk_metrics_are_on_the_same_endpoint(scenario: Scenario) -> None:
    s = scenario.after
    failed_tasks = value(s, "temporal_workflow_task_execution_failed_total")
    assert (
        failed_tasks
        == value(s, "temporal_workflow_task_execution_failed_total", workflow_type="MetricsProbe")
        == 1
    )
    assert value(s, "temporal_num_pollers", poller_type="workflow_task") >= 1
    assert value(s, "temporal_activity_execution_failed_total") > 0
