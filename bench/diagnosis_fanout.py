"""Diagnosis fan-out: the api-errors diagnosis takes about as long as its slowest check.

    .venv/bin/python bench/diagnosis_fanout.py [--runs 2] [--scale 1.0] [--json PATH]

It starts what it needs on free ports in a temporary state dir (PostgreSQL, Valkey, Kafka,
the sandbox with moto; the Temporal dev server; the real worker in this process), injects
latency into each check's backend through the sandbox's `/control/latency` (HTTP endpoints
and moto services; Redis has none), then

1. runs the eight checks of `ApiErrorRateSpike` one after another, each timed alone, by
   calling the same activities the worker runs with the same requests;
2. runs the diagnosis through the worker (`api-errors --dry-run`, which stops after the
   plan) `--runs` times, and takes the diagnosis span from the run's timeline (first check
   started to last check ended) and the client's wall time from start to result.

It prints the span against the slowest check (target: within 1.2x) and against the sum of
the checks, stops everything it started, and exits 1 when the target is missed.
"""

import argparse
import asyncio
import inspect
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from activities.aws_access import AwsAccess
from activities.cloudwatch import CloudWatchActivities, MetricRequest
from activities.ecs import EcsActivities, ServicesRequest, TasksRequest
from activities.health import HealthActivities, HealthRequest
from activities.logs import LogErrorsRequest, LogsActivities
from activities.prometheus import BreakersRequest, ErrorRateRequest, PrometheusActivities
from activities.redis_info import RedisActivities, RedisStatsRequest
from bench.common import Report, own_stack
from settings import Settings
from worker import AWS_CONFIG, build_worker
from workflows import search_attributes
from workflows.api_errors import ApiErrorRateSpike, ApiErrorsInput
from workflows.models import RunbookResult
from workflows.registry import PROCEDURES

PARTS = ("postgres", "redis", "kafka", "sandbox", "aws")
# Seconds added to each request of a backend: HTTP paths of the service, or moto services.
# A check that makes two requests (ECS tasks: list + describe; the 5xx share: two scrapes)
# pays twice. HTTP checks time out after 5 s, so a single delay stays under that.
LATENCY = {
    "/health/detailed": 3.5,
    "cloudwatch": 3.0,
    "logs": 1.5,
    "/metrics": 1.2,
    "ecs": 1.0,
}
WINDOW = 1.0  # the 5xx share's window: it sleeps this long between its two scrapes
TARGET = 1.2
DEADLINE = 115.0  # seconds: the whole benchmark, start-up and shutdown included


@dataclass
class Check:
    name: str
    run: Callable[[], Awaitable[Any]]


def checks(inp: ApiErrorsInput, http: httpx.AsyncClient, settings: Settings) -> list[Check]:
    """The checks of ApiErrorRateSpike._diagnose, with the same requests."""
    ecs = EcsActivities(AwsAccess(config=AWS_CONFIG))
    logs = LogsActivities(boto3.client("logs", config=AWS_CONFIG))
    cloudwatch = CloudWatchActivities(boto3.client("cloudwatch", config=AWS_CONFIG))
    health = HealthActivities(settings.api_base_url, http)
    prometheus = PrometheusActivities(settings.api_base_url, http)
    redis = RedisActivities(settings.redis_url)
    cpu = MetricRequest(
        metric_name="CPUUtilization",
        dimensions={"DBInstanceIdentifier": inp.db_instance_id},
        minutes=inp.cpu_minutes,
    )
    errors = LogErrorsRequest(
        log_group=inp.log_group, minutes=inp.log_minutes, terms=["ERROR", "CRITICAL"]
    )
    env = ActivityEnvironment()

    def call(fn: Callable[[Any], Any], arg: Any) -> Callable[[], Awaitable[Any]]:
        """As the worker runs it: async on the event loop, sync on a thread."""
        if inspect.iscoroutinefunction(fn):
            return lambda: env.run(fn, arg)
        return lambda: asyncio.to_thread(env.run, fn, arg)

    services = ServicesRequest(cluster=inp.cluster, services=[inp.service])
    return [
        Check(f"ecs {inp.service}", call(ecs.describe_services, services)),
        Check(
            f"ecs {inp.service} tasks",
            call(ecs.list_tasks, TasksRequest(cluster=inp.cluster, service=inp.service)),
        ),
        Check(f"logs {inp.log_group}", call(logs.recent_errors, errors)),
        Check("/health/detailed", call(health.check, HealthRequest(path="/health/detailed"))),
        Check("rds CPUUtilization", call(cloudwatch.metric_statistics, cpu)),
        Check("redis", call(redis.info_stats, RedisStatsRequest())),
        Check("circuit breakers", call(prometheus.circuit_breakers, BreakersRequest())),
        Check(
            "5xx rate",
            call(
                prometheus.error_rate,
                ErrorRateRequest(window_seconds=inp.error_window_seconds),
            ),
        ),
    ]


async def one_after_another(found: list[Check]) -> dict[str, float]:
    took: dict[str, float] = {}
    for check in found:
        started = time.monotonic()
        await check.run()
        took[check.name] = time.monotonic() - started
    return took


async def through_the_worker(
    env: WorkflowEnvironment, queue: str, inp: ApiErrorsInput
) -> tuple[float, float, dict[str, float]]:
    """One dry run: (diagnosis span, client wall time, each check's time in the run)."""
    started = time.monotonic()
    result: RunbookResult = await env.client.execute_workflow(
        ApiErrorRateSpike.run,
        inp,
        id=PROCEDURES["api-errors"].workflow_id(inp),  # the worker checks the id names it
        task_queue=queue,
        id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
    )
    wall = time.monotonic() - started
    plan_at = next(i for i, s in enumerate(result.timeline) if s.name == "plan")
    steps = result.timeline[1:plan_at]  # between "started" and "plan": the checks
    first = min(s.started_at for s in steps)
    last = max(s.ended_at or s.started_at for s in steps)
    each = {s.name: ((s.ended_at or s.started_at) - s.started_at).total_seconds() for s in steps}
    return (last - first).total_seconds(), wall, each


def report(
    alone: dict[str, float], runs: list[tuple[float, float, dict[str, float]]], figures: Report
) -> bool:
    slowest_name = max(alone, key=alone.__getitem__)
    slowest, total = alone[slowest_name], sum(alone.values())
    spans = [span for span, _, _ in runs]
    walls = [wall for _, wall, _ in runs]
    span = statistics.median(spans)
    median_run = runs[spans.index(span)][2] if span in spans else runs[-1][2]
    print("\ncheck                          alone   in the workflow (the median run)")
    for name, seconds in alone.items():
        print(f"  {name:<28} {seconds:5.2f}s  {median_run.get(name, float('nan')):5.2f}s")
    print(f"\nslowest check alone ({slowest_name}): {slowest:.2f}s")
    print(f"sum of the checks one after another:   {total:.2f}s")
    print(
        f"diagnosis in the workflow, {len(runs)} runs:     "
        f"{', '.join(f'{s:.2f}s' for s in spans)} (median {span:.2f}s)"
    )
    print(
        f"dry run start to result (client):      "
        f"{', '.join(f'{w:.2f}s' for w in walls)} (median {statistics.median(walls):.2f}s)"
    )
    ratio = span / slowest
    print(
        f"\ndiagnosis / slowest check = {ratio:.2f}x (target <= {TARGET}x): "
        f"{'OK' if ratio <= TARGET else 'MISSED'}"
    )
    print(f"sum / diagnosis = {total / span:.1f}x faster than one after another")
    figures.add(f"slowest check alone ({slowest_name})", slowest, "s")
    figures.add("the 8 checks one after another (as a person would)", total, "s")
    figures.add(f"diagnosis in the workflow (median of {len(runs)} runs)", span, "s")
    figures.add("diagnosis / slowest check", ratio, "x", target=f"<= {TARGET}", below=TARGET + 1e-9)
    figures.add("one after another / diagnosis (speed-up)", total / span, "x")
    return ratio <= TARGET


async def measure(stack_env: dict[str, str], runs: int, scale: float, figures: Report) -> bool:
    queue = f"bench-diagnosis-{uuid.uuid4().hex[:8]}"
    os.environ.update(stack_env)  # boto3 reads AWS_* from the environment
    settings = Settings.model_validate({**stack_env, "RUNBOOK_TASK_QUEUE": queue})
    inp = ApiErrorsInput(requested_by="bench", dry_run=True, error_window_seconds=WINDOW)
    latency = {key: round(seconds * scale, 2) for key, seconds in LATENCY.items()}
    async with httpx.AsyncClient(base_url=stack_env["SANDBOX_URL"], timeout=30) as sandbox:
        (await sandbox.post("/control/reset")).raise_for_status()
        (await sandbox.post("/control/latency", json=latency)).raise_for_status()
        print(f"latency injected: {latency}; 5xx window {WINDOW}s", flush=True)
        env = await WorkflowEnvironment.start_local(
            data_converter=pydantic_data_converter,
            dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
            search_attributes=search_attributes.ALL,
            dev_server_log_level="error",
        )
        try:
            async with httpx.AsyncClient() as http:
                alone = await one_after_another(checks(inp, http, settings))
                print(f"one after another: {sum(alone.values()):.2f}s", flush=True)
                async with build_worker(env.client, settings, http):
                    results = [await through_the_worker(env, queue, inp) for _ in range(runs)]
        finally:
            await env.shutdown()
            await sandbox.delete("/control/latency")
    return report(alone, results, figures)


async def run(args: argparse.Namespace, stack_env: dict[str, str], figures: Report) -> bool:
    left = DEADLINE - (time.monotonic() - args.started) - 10  # 10 s to stop the stack
    try:
        return await asyncio.wait_for(measure(stack_env, args.runs, args.scale, figures), left)
    except TimeoutError:
        print(f"gave up: the benchmark did not finish within {DEADLINE:.0f}s")
        return False


def main(args: argparse.Namespace) -> int:
    """The parts the diagnosis reads on free ports in a temporary state dir, then measure."""
    args.started = time.monotonic()
    figures = Report("diagnosis fan-out")
    with own_stack("diag", PARTS, timeout=60) as (_, stack_env):
        ok = asyncio.run(run(args, stack_env, figures))
    print(f"benchmark done in {time.monotonic() - args.started:.1f}s")
    figures.write(args.json)
    return 0 if ok else 1


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="dry runs through the worker")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every latency")
    parser.add_argument("--json", help="write the figures here")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main(parse()))
