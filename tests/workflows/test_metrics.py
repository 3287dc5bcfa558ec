"""The worker's metrics endpoint: the SDK's metrics and the runbooks' own, after a scenario on
the time-skipping server with fake activities (one approved failover whose Slack fails, one
gate nobody answers, one workflow task that fails once, one activity retried past the limit).
"""

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner

from intake.metrics import RequestCounter
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


async def serving_metrics(env: WorkflowEnvironment) -> tuple[Client, str]:
    """A client of `env`'s server whose runtime serves metrics (as the worker's does), and the
    endpoint's URL."""
    port = free_ports(("metrics",))["metrics"]
    client = await Client.connect(
        env.client.service_client.config.target_host,
        namespace=env.client.namespace,
        data_converter=pydantic_data_converter,
        runtime=metrics_runtime(f"127.0.0.1:{port}"),
    )
    return client, f"http://127.0.0.1:{port}/metrics"


@pytest.fixture(scope="module")
async def scenario(
    ts_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Scenario]:
    """The scenario once for the module, scraped before and after; its worker still polls."""
    client, url = await serving_metrics(ts_env)
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
        # Another database: a run's id names its resource, one run a resource at a time.
        other = DbFailoverInput(
            requested_by="alice", db_instance_id="metrics-other-db", approval_timeout_seconds=60
        )
        unanswered = await start(ts_env, queue, other)
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
    # The approved failover took its database's lock, free: one wait of 0 s.
    assert value(s, f"{metrics.LOCK_WAIT_SECONDS}_count", procedure=procedure) == 1
    assert value(s, f"{metrics.LOCK_WAIT_SECONDS}_bucket", procedure=procedure, le="0.5") == 1
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


# ---- the alert rules and the dashboard (deploy/observability) ---------------------------------
#
# No promtool here: the rules keep to a small PromQL subset, evaluated below over two scrapes
# (increase = after - before, as over a window that holds the scenario).

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
SELECTOR = re.compile(r"^(?P<name>[a-z_:][a-z0-9_:]*)(?:\{(?P<matchers>[^}]*)\})?$")
THRESHOLD = re.compile(
    r"^(?P<agg>sum|max)(?: by \((?P<by>[a-z_, ]*)\))? \((?P<inner>.+)\) "
    r"(?P<op>[<>]=?|==) (?P<n>[0-9.]+)$"
)
INCREASE = re.compile(r"^increase\((?P<selector>.+)\[\d+[smhd]\]\)$")
ABSENT = re.compile(r"^absent\((?P<selector>.+)\)$")
Firing = list[dict[str, str]]


def selector(text: str) -> tuple[str, dict[str, str]]:
    match = SELECTOR.match(text.strip())
    assert match, f"not a selector this test evaluates: {text}"
    pairs = (m.split("=", 1) for m in (match["matchers"] or "").split(",") if m.strip())
    return match["name"], {k.strip(): v.strip().strip('"') for k, v in pairs}


def series(samples: Samples, name: str, labels: dict[str, str]) -> dict[frozenset, float]:
    return {ls: v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls}


def evaluate(expr: str, before: Samples, after: Samples) -> Firing:
    """The label sets `expr` fires for: `A or B`, `absent(sel)`, `sum|max [by (..)] (X) op N`
    with X `sel` or `increase(sel[range])`."""
    if " or " in expr:
        return [f for part in expr.split(" or ") for f in evaluate(part, before, after)]
    if match := ABSENT.match(expr.strip()):
        return [] if series(after, *selector(match["selector"])) else [{}]
    match = THRESHOLD.match(expr.strip())
    assert match, f"not an expression this test evaluates: {expr}"
    increase = INCREASE.match(match["inner"])
    name, labels = selector(increase["selector"] if increase else match["inner"])
    by = [b.strip() for b in (match["by"] or "").split(",") if b.strip()]
    was = series(before, name, labels) if increase else {}
    sums: dict[tuple[tuple[str, str], ...], float] = {}
    for ls, v in series(after, name, labels).items():
        key = tuple((b, dict(ls).get(b, "")) for b in by)
        if match["agg"] == "max":
            sums[key] = max(sums.get(key, v), v - was.get(ls, 0))
        else:
            sums[key] = sums.get(key, 0) + v - was.get(ls, 0)
    compare = {"<": float.__lt__, ">": float.__gt__, "<=": float.__le__, ">=": float.__ge__}
    op = compare.get(match["op"], float.__eq__)
    return [dict(key) for key, total in sums.items() if op(float(total), float(match["n"]))]


def rules() -> dict[str, dict[str, Any]]:
    loaded = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    return {rule["alert"]: rule for group in loaded["groups"] for rule in group["rules"]}


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(?:runbook|temporal)_[a-z_]+\b", expr))


def test_every_rule_is_complete_and_names_exposed_metrics(
    scenario: Scenario, gate_gauges: Samples
) -> None:
    exposed = {name for name, _ in scenario.after} | {name for name, _ in gate_gauges}
    assert set(rules()) == {
        "RunbookGatePastDeadline",
        "RunbookUrgentGateWaiting",
        "RunbookWorkflowTaskFailures",
        "RunbookActivityAttemptsHigh",
        "RunbookNotificationFailed",
        "RunbookNoWorkerPolling",
    }
    for name, rule in rules().items():
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert metric_names(rule["expr"]) and metric_names(rule["expr"]) <= exposed, name


@pytest.mark.parametrize(
    ("alert", "fires_for"),
    [
        ("RunbookGatePastDeadline", {"procedure": "db-failover"}),
        ("RunbookWorkflowTaskFailures", {"workflow_type": "MetricsProbe"}),
        ("RunbookActivityAttemptsHigh", {"activity_type": "metrics-probe.flaky"}),
        ("RunbookNotificationFailed", {"channel": "slack", "kind": "approval_request"}),
    ],
)
def test_each_threshold_rule_fires_on_the_scenario_only(
    scenario: Scenario, alert: str, fires_for: dict[str, str]
) -> None:
    expr = rules()[alert]["expr"]
    firing = evaluate(expr, scenario.before, scenario.after)
    assert any(fires_for.items() <= f.items() for f in firing), firing
    assert evaluate(expr, scenario.after, scenario.after) == []  # nothing new: quiet


def test_no_worker_polling_fires_when_the_workers_endpoint_is_gone(scenario: Scenario) -> None:
    expr = rules()["RunbookNoWorkerPolling"]["expr"]
    assert evaluate(expr, scenario.after, scenario.after) == []  # polling: quiet
    assert evaluate(expr, {}, {}) == [{}]  # no worker: no series at all


def test_the_dashboard_queries_exposed_metrics(scenario: Scenario, gate_gauges: Samples) -> None:
    dashboard = json.loads((OBSERVABILITY / "dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = set().union(*(metric_names(e) for e in exprs))
    intake = RequestCounter()
    intake.requests.labels("/health", "GET", "200").inc()
    exposed = {name for name, _ in [*scenario.after, *gate_gauges]} | {
        s.name
        for f in text_string_to_metric_families(generate_latest(intake.registry).decode())
        for s in f.samples
    }
    assert used <= exposed, used - exposed
    runbook_metrics = {v for k, v in vars(metrics).items() if k.isupper() and isinstance(v, str)}
    assert {m for m in runbook_metrics if m.startswith("runbook_")} <= {
        re.sub(r"_(total|bucket)$", "", name) for name in used
    }  # every runbook metric has a panel


# ---- the gates waiting now (Temporal's visibility: the dev server) ----------------------------

HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
async def gate_gauges(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Samples]:
    """A P0 failover waiting at its gate, counted by `watch_gates` with a clock an hour ahead;
    the gauges once it waits, and (checked here) back to 0 once the run has ended."""
    client, url = await serving_metrics(dev_env)
    fakes = FakeSystems(write_roster(tmp_path_factory.mktemp("gauges")))
    inp = DbFailoverInput(
        requested_by="alice", severity="P0", db_instance_id=f"gauges-db-{uuid.uuid4().hex[:8]}"
    )
    unsandboxed = UnsandboxedWorkflowRunner()
    async with running(
        dev_env, [DatabaseFailover], fakes.activities(), workflow_runner=unsandboxed
    ) as queue:
        handle = await start(dev_env, queue, inp)
        await until(handle, gate_open)
        ahead = lambda: datetime.now(UTC) + HOUR  # noqa: E731
        watching = asyncio.create_task(metrics.watch_gates(client, interval=0.2, clock=ahead))
        try:
            key = {
                "procedure": "db-failover",
                "severity": "P0",
                "level": "on-call",
                "environment": "production",
            }
            waiting = await eventually(
                lambda: _gauge(url, metrics.GATES_WAITING, 1, **key), "the gate counted"
            )
            await handle.terminate("the gauges are read")
            await eventually(lambda: _gauge(url, metrics.GATES_WAITING, 0, **key), "back to 0")
        finally:
            watching.cancel()
    yield waiting


async def _gauge(url: str, name: str, want: float, **labels: str) -> Samples | None:
    samples = await scrape(url)
    found = series(samples, name, labels)
    return samples if found and sum(found.values()) == want else None


def test_the_gates_waiting_gauges_come_from_visibility(gate_gauges: Samples) -> None:
    key = {
        "procedure": "db-failover",
        "severity": "P0",
        "level": "on-call",
        "environment": "production",
    }
    assert value(gate_gauges, metrics.GATES_WAITING, **key) == 1
    oldest = value(gate_gauges, metrics.GATE_OLDEST_SECONDS, **key)
    assert HOUR.total_seconds() <= oldest < HOUR.total_seconds() + 600  # the clock's hour ahead


def test_the_urgent_gate_rule_fires_on_an_old_p0_gate(gate_gauges: Samples) -> None:
    expr = rules()["RunbookUrgentGateWaiting"]["expr"]
    assert evaluate(expr, {}, gate_gauges) == [{"procedure": "db-failover", "level": "on-call"}]
    younger = {
        k: (v - 3000 if k[0] == metrics.GATE_OLDEST_SECONDS else v) for k, v in gate_gauges.items()
    }
    assert evaluate(expr, {}, younger) == []
