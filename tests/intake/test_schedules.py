"""Schedules on the Temporal dev server (the time-skipping server has none): apply is
idempotent, pause/resume, the CLI; and the LLM spend watch on real Valkey."""

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from temporalio.client import Client, ScheduleActionStartWorkflow, ScheduleIntervalSpec
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.alarms import AlarmActivities, AlarmStarter
from activities.spend import SpendActivities, SpendReadRequest, budget_gauge
from client.errors import BadInput
from intake import schedules
from settings import EnvironmentProfile
from tests.conftest import serving_http
from tests.e2e.conftest import cli
from tests.fakes.stub_runbook import STUB_WORKER, StubRunbook, stub_procedure
from tests.temporal_env import keep_history, running
from workflows import registry
from workflows.llm_spend_watch import LlmSpendWatch, LlmSpendWatchInput, LlmSpendWatchResult
from workflows.models import RunbookStatus

pytestmark = pytest.mark.timeout(120)
PRODUCTION = EnvironmentProfile(name="production", task_queue="runbooks")


@pytest.fixture
async def clean(dev_env: WorkflowEnvironment) -> AsyncIterator[Client]:
    """No schedule of ours before or after the test."""

    async def drop() -> None:
        for definition in schedules.SCHEDULES:
            with contextlib.suppress(RPCError):
                await dev_env.client.get_schedule_handle(f"{definition.name}/production").delete()

    await drop()
    yield dev_env.client
    await drop()


# ---- schedules --------------------------------------------------------------------------------


async def test_apply_twice_gives_the_same_schedules(clean: Client) -> None:
    assert {r.name: r.applied for r in await schedules.rows(clean, "production")} == {
        "cert-expiry-check": False,
        "llm-spend-watch": False,
    }
    first = await schedules.apply(clean, PRODUCTION)
    assert first == {"cert-expiry-check": "created", "llm-spend-watch": "created"}
    before = {r.name: r for r in await schedules.rows(clean, "production")}
    again = await schedules.apply(clean, PRODUCTION)
    assert again == {"cert-expiry-check": "updated", "llm-spend-watch": "updated"}
    after = {r.name: r for r in await schedules.rows(clean, "production")}
    assert after == before
    watch_row = after["llm-spend-watch"]
    assert watch_row.applied and not watch_row.paused and watch_row.next_run is not None
    ours = {s.id async for s in await clean.list_schedules()}
    assert {"cert-expiry-check/production", "llm-spend-watch/production"} <= ours

    cert = await clean.get_schedule_handle("cert-expiry-check/production").describe()
    action = cert.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.workflow == "CertExpiryCheck" and action.task_queue == "runbooks"
    assert action.id == "cert-expiry-check/production"
    daily = cert.schedule.spec.calendars[0]
    assert (daily.hour[0].start, daily.minute[0].start) == (6, 0)
    watch = await clean.get_schedule_handle("llm-spend-watch/production").describe()
    assert isinstance(watch.schedule.action, ScheduleActionStartWorkflow)
    assert watch.schedule.action.workflow == "LlmSpendWatch"
    assert watch.schedule.spec.intervals == [
        ScheduleIntervalSpec(every=schedules.SCHEDULES[1].spec.intervals[0].every)
    ]


async def test_a_schedule_waits_paused_until_its_workflow_is_deployed(
    clean: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployed = schedules.deployed_workflow_types()
    assert "LlmSpendWatch" in deployed
    monkeypatch.setattr(
        schedules, "deployed_workflow_types", lambda: deployed - {"CertExpiryCheck"}
    )
    await schedules.apply(clean, PRODUCTION)
    row = {r.name: r for r in await schedules.rows(clean, "production")}["cert-expiry-check"]
    assert row.paused and row.note == "paused until its workflow type is deployed: CertExpiryCheck"
    monkeypatch.setattr(
        schedules, "deployed_workflow_types", lambda: deployed | {"CertExpiryCheck"}
    )
    await schedules.apply(clean, PRODUCTION)
    row = {r.name: r for r in await schedules.rows(clean, "production")}["cert-expiry-check"]
    assert not row.paused and row.next_run is not None
    assert (row.next_run.hour, row.next_run.minute) == (6, 0)


async def test_pause_and_resume_survive_apply(clean: Client) -> None:
    with pytest.raises(BadInput, match="not applied in production yet"):
        await schedules.set_paused(clean, "llm-spend-watch", "production", True, "x")
    await schedules.apply(clean, PRODUCTION)
    await schedules.set_paused(clean, "llm-spend-watch", "production", True, "budget review")
    await schedules.apply(clean, PRODUCTION)  # keeps the paused state and its note
    row = {r.name: r for r in await schedules.rows(clean, "production")}["llm-spend-watch"]
    assert row.paused and row.note == "budget review"
    await schedules.set_paused(clean, "llm-spend-watch", "production", False, "resumed")
    row = {r.name: r for r in await schedules.rows(clean, "production")}["llm-spend-watch"]
    assert not row.paused
    with pytest.raises(BadInput, match="no schedule 'nope'"):
        await schedules.set_paused(clean, "nope", "production", True, "x")


async def test_schedules_cli(clean: Client, dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    target = dev_env.client.service_client.config.target_host
    env = {**os.environ, "TEMPORAL_ADDRESS": target, "RUNBOOK_STATE_DIR": str(tmp_path)}
    applied = await cli(env, "schedules", "apply", "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["applied"]["llm-spend-watch"] == "created"
    paused = await cli(env, "schedules", "pause", "cert-expiry-check", "--note", "freeze")
    assert paused.returncode == 0, paused.stderr
    listed = json.loads((await cli(env, "schedules", "--json")).stdout)["schedules"]
    by_name = {row["name"]: row for row in listed}
    assert (
        by_name["cert-expiry-check"]["paused"] and by_name["cert-expiry-check"]["note"] == "freeze"
    )
    assert not by_name["llm-spend-watch"]["paused"] and by_name["llm-spend-watch"]["next_run"]
    text = (await cli(env, "schedules")).stdout
    assert "cert-expiry-check  paused" in text and "llm-spend-watch    active  next " in text
    assert (await cli(env, "schedules", "resume", "cert-expiry-check")).returncode == 0
    bad = await cli(env, "schedules", "pause", "nope")
    assert bad.returncode == 2 and "no schedule 'nope'" in bad.stderr
    missing = await cli(env, "schedules", "pause")
    assert missing.returncode == 2 and "NAME is required" in missing.stderr


# ---- the LLM spend watch ----------------------------------------------------------------------


@dataclass
class Metrics:
    text: str = ""


@pytest.fixture(scope="module")
def metrics() -> Iterator[tuple[Metrics, str]]:
    """The service's /metrics, serving what the test sets."""
    served = Metrics()
    with serving_http(
        lambda path: (200 if path == "/metrics" else 404, served.text.encode())
    ) as url:
        yield served, url


@dataclass
class Watch:
    client: Client
    queue: str
    prefix: str
    resource: str
    redis: Any
    metrics: Metrics

    async def set_spend(self, spend: float, budget: float | None) -> None:
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        await self.redis.set(f"{self.prefix}{today}", str(spend))
        gauge = f"llm_budget_daily_usd {budget}\n" if budget is not None else ""
        self.metrics.text = f"# TYPE llm_budget_daily_usd gauge\n{gauge}"

    async def run(self, keep: str | None = None) -> LlmSpendWatchResult:
        handle = await self.client.start_workflow(
            LlmSpendWatch.run,
            LlmSpendWatchInput(),
            id=f"llm-spend-watch-{time.monotonic_ns()}",
            task_queue=self.queue,
            result_type=LlmSpendWatchResult,
        )
        result = await handle.result()
        if keep:
            await keep_history(handle, keep)
        return result

    @property
    def workflow_id(self) -> str:
        return f"llm-budget/production/{self.resource}"


@pytest.fixture
async def watch(
    dev_env: WorkflowEnvironment,
    redis_url: str,
    metrics: tuple[Metrics, str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Watch]:
    served, base = metrics
    queue = f"spend-{time.monotonic_ns()}"
    resource = f"budget-{request.node.name[-24:]}-{time.monotonic_ns()}"
    procedure = stub_procedure("llm-budget", "scope", default=resource)
    monkeypatch.setitem(registry.PROCEDURES, "llm-budget", procedure)
    client = redis.asyncio.Redis.from_url(redis_url)
    async with httpx.AsyncClient() as http:
        spend = SpendActivities(client, http, base, f"test:{queue}:", configured_budget=None)
        async with running(
            dev_env,
            [LlmSpendWatch, StubRunbook],
            [spend.read, AlarmActivities(AlarmStarter(dev_env.client)).start_once],
            queue=queue,
            **STUB_WORKER,
        ):
            yield Watch(dev_env.client, queue, f"test:{queue}:", resource, client, served)
    await client.aclose()


async def test_below_the_threshold_starts_nothing(watch: Watch) -> None:
    await watch.set_spend(89.99, 100)
    result = await watch.run(keep="llm_spend_watch_below")
    assert result.action == "below" and result.ratio == pytest.approx(0.8999)
    assert result.budget == 100 and result.budget_source == "metrics"


async def test_at_90_percent_it_starts_llm_budget_once(watch: Watch) -> None:
    await watch.set_spend(92, 100)
    first = await watch.run(keep="llm_spend_watch_started_llm_budget")
    assert first.action == "started" and first.workflow_id == watch.workflow_id
    second = await watch.run(keep="llm_spend_watch_signalled_the_running_one")
    assert second.action == "signalled"
    handle = watch.client.get_workflow_handle(watch.workflow_id)
    status = await handle.query("status", result_type=RunbookStatus)
    assert status.severity == "P2"
    line = next(s for s in status.timeline if s.name == "alarm llm-spend-watch ALARM")
    assert (
        line.detail.startswith("2x via schedule") and "spend $92.00 of $100.00 (92%)" in line.detail
    )
    started = next(s for s in status.timeline if s.name == "started")
    assert "schedule:llm-spend-watch via schedule" in started.detail

    await handle.signal(StubRunbook.finish)
    await handle.result()
    later = await watch.run(
        keep="llm_spend_watch_suppressed_handled_today"
    )  # the same day: that run handled it
    assert later.action == "suppressed" and "was handled by run" in later.detail


async def test_spent_budget_is_p1_and_config_is_the_fallback(
    watch: Watch, redis_url: str, metrics: tuple[Metrics, str], dev_env: WorkflowEnvironment
) -> None:
    await watch.set_spend(60, None)  # /metrics without the gauge
    assert (await watch.run()).action == "no_budget"
    async with httpx.AsyncClient() as http:
        spend = SpendActivities(watch.redis, http, metrics[1], watch.prefix, configured_budget=50)
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        reading = await spend.read(SpendReadRequest(date=today))
    assert (reading.spend, reading.budget, reading.budget_source) == (60, 50, "config")
    await watch.set_spend(101, 100)
    result = await watch.run()
    assert result.action == "started"
    status = await watch.client.get_workflow_handle(watch.workflow_id).query(
        "status", result_type=RunbookStatus
    )
    assert status.severity == "P1"


async def test_without_llm_budget_installed_it_only_reports(
    watch: Watch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(registry.PROCEDURES, "llm-budget")
    await watch.set_spend(99, 100)
    result = await watch.run()
    assert result.action == "not_installed" and "llm-budget is not installed" in result.detail


async def test_the_watch_passes_the_workflow_sandbox(
    dev_env: WorkflowEnvironment, redis_url: str, metrics: tuple[Metrics, str]
) -> None:
    metrics[0].text = "llm_budget_daily 100\n"
    client = redis.asyncio.Redis.from_url(redis_url)
    queue = f"spend-sandboxed-{time.monotonic_ns()}"
    async with httpx.AsyncClient() as http:
        spend = SpendActivities(client, http, metrics[1], f"test:{queue}:", None)
        async with Worker(
            dev_env.client, task_queue=queue, workflows=[LlmSpendWatch], activities=[spend.read]
        ):
            result = await dev_env.client.execute_workflow(
                LlmSpendWatch.run,
                LlmSpendWatchInput(),
                id=f"llm-spend-watch-{queue}",
                task_queue=queue,
                result_type=LlmSpendWatchResult,
            )
    await client.aclose()
    assert result.action == "below" and result.spend == 0 and result.budget == 100


def test_budget_gauge_names() -> None:
    assert budget_gauge("llm_budget_daily_usd 120.5\n") == (120.5, "")
    assert budget_gauge("llm_budget_daily 80\n") == (80, "")
    value, why = budget_gauge("llm_api_calls_total 3\n")
    assert value is None and "no llm_budget_daily_usd or llm_budget_daily gauge" in why
