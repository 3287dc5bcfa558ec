"""Faults injected between the worker and everything it calls, by a proxy of the test's own
(fault_proxy.py): AWS throttling and 5xx, slow endpoints, Slack and PagerDuty failing.

Three runs at once on one worker, each with its own faults:

- kafka-lag: `/health/workers` answers after the check's timeout, CloudWatch Logs throttles
  for ever; the scale-up (UpdateService) is throttled 6 times, more than botocore's own
  retries absorb. The diagnosis reports both checks and goes on; the scale is retried with
  backoff until AWS takes it, once.
- high-memory: CloudWatch and ECS answer 500 to the memory metric and ListTasks (the
  diagnosis reports both and goes on); RegisterTaskDefinition answers 503 for ever. The
  step retries within its limits, then the run stops cleanly: nothing registered or
  updated, the failure in the timeline and in the Slack message.
- db-failover: Slack answers 503 twice to the approval request and always to the result;
  PagerDuty is down when the gate resolves its page. The failover completes; every
  notification is delivered or recorded as failed in the timeline (and so in the incident
  log).
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHandle

from tests.fakes.approvers import signed
from tests.reliability.conftest import WORKER_ACCESS_KEY, Reliability, queue_name
from tests.reliability.fault_proxy import FaultProxy, Request, Rule
from tests.reliability.harness import WorkerProcess
from tests.reliability.test_crash_every_mutation import KAFKA_INCIDENT, count, steps
from tests.temporal_env import eventually
from workflows.models import RunbookResult, RunbookStatus

pytestmark = pytest.mark.timeout(400)
T = TypeVar("T")
# botocore's standard retry mode (worker.AWS_CONFIG) and the procedures' retry policies.
BOTOCORE_ATTEMPTS = 5  # retries={"max_attempts": 4} are retries: 5 tries a call
MUTATE_ATTEMPTS = 5
NOTIFY_ATTEMPTS = 4
CHECK_ATTEMPTS = 2  # workflows.diagnosis.CHECK_RETRY
READ_ATTEMPTS = 3  # workflows.base.READ_RETRY


def aws(action: str, *words: bytes) -> Callable[[Request], bool]:
    return lambda r: r.aws_action == action and all(w in r.body for w in words)


def http(prefix: str, *words: bytes) -> Callable[[Request], bool]:
    return lambda r: r.path.startswith(prefix) and all(w in r.body for w in words)


def error(name: str, match: Callable[[Request], bool], status: int, code: str = "") -> Rule:
    return Rule(name, match, "error", status, code or "InternalFailure")


@pytest.fixture(scope="module")
def proxied(reliability: Reliability) -> Iterator[tuple[FaultProxy, str, WorkerProcess]]:
    """A worker that reaches AWS, the service, Slack and PagerDuty only through the proxy."""
    rel = reliability
    sandbox = rel.sandbox_url
    routes = {
        "": rel.aws_url,
        **dict.fromkeys(("/health", "/metrics", "/slack/", "/pagerduty/"), sandbox),
    }
    with FaultProxy(routes) as proxy:
        queue = queue_name("faults-proxy")
        worker = rel.worker(
            queue,
            AWS_ENDPOINT_URL=proxy.url,
            API_BASE_URL=proxy.url,
            SLACK_WEBHOOK_URL=f"{proxy.url}/slack/webhook?token={rel.slack_token}",
            SLACK_BOT_TOKEN="",  # the webhook's faults: no Slack app here
            PAGERDUTY_EVENTS_URL=f"{proxy.url}/pagerduty/v2/enqueue",
        ).go()
        yield proxy, queue, worker
        worker.stop()


async def start(rel: Reliability, queue: str, procedure: str, **inp: object) -> WorkflowHandle:
    return await rel.start(queue, procedure, **inp)


async def approve(rel: Reliability, handle: WorkflowHandle) -> None:
    async def gate_open() -> bool:
        status = await handle.query("status", result_type=RunbookStatus)
        return status.pending_gate is not None

    await eventually(gate_open, f"{handle.id}: the gate to open", timeout=180)
    await handle.execute_update(
        "approve", await signed(handle, "bob", key=rel.approver_keys()["bob"])
    )


async def activity_attempts(handle: WorkflowHandle, activity_type: str) -> int:
    """The attempt that completed the activity (Temporal records only the last start)."""
    scheduled: set[int] = set()
    attempt = 0
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == activity_type:
                scheduled.add(event.event_id)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            if started.scheduled_event_id in scheduled:
                attempt = max(attempt, started.attempt)
    return attempt


async def kafka_lag_throttled(rel: Reliability, proxy: FaultProxy, queue: str) -> None:
    throttled = error("throttle scale", aws("UpdateService", b"context-engine"), 400)
    throttled.code, throttled.times = "ThrottlingException", 6
    scale = proxy.add(throttled)
    logs = error("throttle logs", aws("FilterLogEvents", b"context-engine"), 400)
    logs.code = "ThrottlingException"
    proxy.add(logs)
    workers = proxy.add(Rule("slow /health/workers", http("/health/workers"), "delay"))
    workers.seconds = 7  # the check gives up after 5 s
    handle = await start(
        rel, queue, "kafka-lag", check_timeout_seconds=25, sample_seconds=1, settle_seconds=2,
        poll_seconds=0.5, drain_target_seconds=10,
    )  # fmt: skip
    await approve(rel, handle)
    result = await handle.result()

    assert result.outcome == "completed", result.summary
    found = {f.check: f for f in result.findings}
    assert found["/health/workers"].verdict == "failing"
    assert found["/health/workers"].summary == "ReadTimeout: no answer within 5s"
    throttled = found["logs /ecs/production/context-engine"]
    assert throttled.verdict == "unavailable" and "(ThrottlingException)" in throttled.summary
    assert workers.hits >= 1 and logs.hits == CHECK_ATTEMPTS * BOTOCORE_ATTEMPTS
    assert scale.hits == 6  # 5 tries of the first attempt, 1 of the second
    assert await activity_attempts(handle, "ecs.scale_service") == 2
    assert steps(result)["scale context-engine"].startswith("ok: desired count 2 -> ")


async def high_memory_fails_cleanly(rel: Reliability, proxy: FaultProxy, queue: str) -> None:
    metric = proxy.add(error("metric 500", aws("GetMetricStatistics", b"ContainerInsights"), 500))
    tasks = proxy.add(error("tasks 500", aws("ListTasks", b"orchestration-engine"), 500))
    register = proxy.add(
        error("register 503", aws("RegisterTaskDefinition"), 503, "ServiceUnavailable")
    )
    # 8192 MiB: a size no earlier test registered (a revision with it would be reused).
    inp = {"service": "orchestration-engine", "memory": 8192}
    handle = await start(rel, queue, "high-memory", **inp)
    await approve(rel, handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert "high-memory failed" in str(failed.value.cause)

    status = await handle.query("status", result_type=RunbookStatus)
    assert (status.outcome, status.phase) == ("failed", "failed")
    timeline = steps(status)
    assert timeline["MemoryUtilized"].startswith("failed: "), timeline
    assert "(InternalFailure)" in timeline["MemoryUtilized"]
    assert "(InternalFailure)" in timeline["stopped tasks"]
    assert timeline["register revision"].startswith("failed: ")
    assert "(ServiceUnavailable)" in timeline["register revision"]
    assert "update service orchestration-engine" not in timeline  # stopped before it
    assert timeline["notify failed"].startswith("ok")
    # Within the limits: each attempt of the step, each of botocore's tries; then stop.
    assert register.hits == MUTATE_ATTEMPTS * BOTOCORE_ATTEMPTS
    assert metric.hits == tasks.hits == READ_ATTEMPTS * BOTOCORE_ATTEMPTS


async def db_failover_notifications_fail(
    rel: Reliability, proxy: FaultProxy, queue: str
) -> tuple[WorkflowHandle, RunbookResult]:
    asked = error("slack 503 twice", http("/slack/", b"approval needed", b"db-failover"), 503)
    asked.times = 2
    proxy.add(asked)
    done = proxy.add(error("slack 503", http("/slack/", b"db-failover done"), 503))
    resolve = http("/pagerduty/", b"db-failover", b'"resolve"')
    paged = proxy.add(Rule("pagerduty down", resolve, "drop"))
    handle = await start(rel, queue, "db-failover", poll_seconds=0.2)

    async def delivered() -> bool:
        # The request is retried in the background; the gate would take a decision sooner.
        status = await handle.query("status", result_type=RunbookStatus)
        return any(
            s.name == "notify approval_request" and s.outcome == "ok" for s in status.timeline
        )

    await eventually(delivered, "the approval request delivered on its third try", 120)
    await approve(rel, handle)
    result = await handle.result()

    assert result.outcome == "completed", result.summary
    timeline = steps(result)
    assert timeline["notify approval_request"].startswith("ok: sent to Slack")  # the third try
    assert timeline["page trigger"] == "ok: PagerDuty trigger"
    assert timeline["page resolve"] == "failed: PagerDuty unreachable: RemoteProtocolError"
    assert timeline["notify resolved"] == "failed: Slack webhook answered 503"
    assert timeline["reboot with force-failover"].startswith("ok")
    assert (asked.hits, done.hits, paged.hits) == (2, NOTIFY_ATTEMPTS, NOTIFY_ATTEMPTS)
    return handle, result


async def test_aws_faults_slow_endpoints_and_failing_notifications(
    reliability: Reliability, proxied: tuple[FaultProxy, str, WorkerProcess]
) -> None:
    rel = reliability
    proxy, queue, _ = proxied
    sandbox = httpx.Client(base_url=rel.sandbox_url, timeout=10)
    sandbox.post("/control/reset").raise_for_status()
    sandbox.post("/control/ecs", json={"task_start_seconds": 0.3}).raise_for_status()
    sandbox.post("/control/heal-delay", json={"seconds": 1}).raise_for_status()
    sandbox.delete("/slack/messages").raise_for_status()
    sandbox.delete("/pagerduty/events").raise_for_status()
    sandbox.post("/control/incidents/kafka-lag", json=KAFKA_INCIDENT).raise_for_status()
    sandbox.post("/control/incidents/db-failover").raise_for_status()
    recorder = rel.recorder()
    recorder.restart()
    began = time.monotonic()

    async def timed(name: str, run: Awaitable[T]) -> T:
        result = await run
        print(f"{name}: done after {time.monotonic() - began:.1f}s")
        return result

    async with asyncio.TaskGroup() as group:
        group.create_task(timed("kafka-lag", kafka_lag_throttled(rel, proxy, queue)))
        group.create_task(timed("high-memory", high_memory_fails_cleanly(rel, proxy, queue)))
        failover = group.create_task(
            timed("db-failover", db_failover_notifications_fail(rel, proxy, queue))
        )

    calls = recorder.calls(WORKER_ACCESS_KEY)
    assert count(calls, "UpdateService", service="context-engine") == 1  # once, when let through
    assert count(calls, "RegisterTaskDefinition") == 0  # the 503s never reached AWS
    assert count(calls, "UpdateService", service="orchestration-engine") == 0
    assert count(calls, "RebootDBInstance") == 1

    # Slack got what was let through, once each: the failover's approval request (on the
    # third try), not its result (recorded as failed instead), the high-memory failure
    # with its reason, the kafka-lag result.
    messages = sandbox.get("/slack/messages").json()
    texts = [m["text"] for m in messages]
    assert sum("db-failover: approval needed" in t for t in texts) == 1
    assert not [t for t in texts if "db-failover done" in t]
    failed = [json.dumps(m) for m in messages if "high-memory FAILED" in m["text"]]
    assert len(failed) == 1 and "ServiceUnavailable" in failed[0], texts
    assert sum("context-engine scaled to" in t for t in texts) == 1
    # PagerDuty was down when db-failover's page was to be resolved: its trigger only.
    events = sandbox.get("/pagerduty/events").json()
    pages = [e["event_action"] for e in events if e["dedup_key"].startswith("db-failover/")]
    assert pages == ["trigger"]
    handle, _ = failover.result()
    assert (await handle.query("status", result_type=RunbookStatus)).outcome == "completed"
    sandbox.post("/control/reset").raise_for_status()
