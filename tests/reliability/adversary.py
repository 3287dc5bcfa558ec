"""What the adversarial tests share: the seven mutating procedures with short inputs, the AWS
calls each one's mutations make (to count them at moto's recorder), and how a namespace user
resets a run with the Temporal CLI."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory

from activities.approvals import GUARDED_ACTIVITIES
from tests.reliability.conftest import WORKER_ACCESS_KEY, Reliability
from tests.reliability.harness import AwsCall
from tests.temporal_env import venv_binary

GOOD_TAG = "v1.4.2"  # the sandbox's seed; its bad deploy is v1.5.0
# As in test_crash_remediation.py: 2 workers consume 120/s of 150/s, the lag grows.
KAFKA_INCIDENT = {
    "produce_per_second": 150,
    "per_worker_per_second": 60,
    "backlog": 1500,
    "dlq_messages": 2,
    "lag_threshold": 500,
}
# Each procedure's input, short (the sandbox is fast; the gate is what is attacked).
INPUTS: dict[str, dict[str, Any]] = {
    "db-failover": {"poll_seconds": 0.2, "failover_timeout_seconds": 60},
    "llm-budget": {"watch_minutes": 0.05, "watch_interval_seconds": 1},
    "high-memory": {
        "service": "orchestration-engine",
        "verify_checks": 20,
        "verify_interval_seconds": 1,
    },
    "kafka-lag": {
        "sample_seconds": 1,
        "settle_seconds": 2,
        "poll_seconds": 0.5,
        "drain_target_seconds": 10,
    },
    "api-errors": {"error_window_seconds": 2, "poll_seconds": 0.5, "log_minutes": 5},
    "rollback": {
        "services": ["context-engine"],
        "target": GOOD_TAG,
        "reason": "failed-smoke-tests",
        "poll_seconds": 0.5,
        "verify_interval_seconds": 1,
    },
    "cert-renewal": {"poll_seconds": 1, "verify_interval_seconds": 1},
}
# The parameter an approver gives, for the procedures that ask for one.
PARAMS = {"kafka-lag": "desired_count", "api-errors": "desired_count", "llm-budget": "daily_budget"}


def _is(call: AwsCall, action: str, **params: Any) -> bool:
    return call.action == action and all(
        (call.params.get(k) is not None) if v is ... else call.params.get(k) == v
        for k, v in params.items()
    )


# The AWS calls of each procedure's mutations (the worker's own, by its access key).
MUTATIONS: dict[str, Callable[[AwsCall], bool]] = {
    "db-failover": lambda c: _is(c, "RebootDBInstance"),
    "llm-budget": lambda c: (
        _is(c, "PutSecretValue") or _is(c, "UpdateService", service="api", forceNewDeployment=True)
    ),
    "high-memory": lambda c: (
        _is(c, "RegisterTaskDefinition") or _is(c, "UpdateService", service="orchestration-engine")
    ),
    "kafka-lag": lambda c: _is(c, "UpdateService", service="context-engine", desiredCount=...),
    "api-errors": lambda c: _is(c, "UpdateService", service="api", desiredCount=...),
    "rollback": lambda c: _is(c, "UpdateService", service="context-engine", taskDefinition=...),
    "cert-renewal": lambda c: _is(c, "ModifyListener"),
}


def mutations(rel: Reliability, procedure: str) -> list[AwsCall]:
    return [c for c in rel.recorder().calls(WORKER_ACCESS_KEY) if MUTATIONS[procedure](c)]


async def until_async(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            if value := await check():
                return value
        except AssertionError:
            raise
        except Exception:  # not there yet (a query before the first workflow task, ...)
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


# ---- history --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResetPoint:
    event_id: int
    # A guarded activity (a mutation) is scheduled after this point in the original run.
    before_a_mutation: bool


def reset_points(history: WorkflowHistory) -> list[ResetPoint]:
    """Every workflow task completed after the (last) verified decision: the points a
    namespace user can reset the run to, with the decision already in the history."""
    events = list(history.events)
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    verified = max(
        e.event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        and scheduled[e.activity_task_completed_event_attributes.scheduled_event_id]
        == "approvals.verify"
    )
    guarded = [i for i, name in scheduled.items() if name in GUARDED_ACTIVITIES]
    assert guarded and min(guarded) > verified, "no mutation after the verified decision"
    return [
        ResetPoint(e.event_id, e.event_id < max(guarded))
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED and e.event_id > verified
    ]


def guarded_refusals(events: list[HistoryEvent]) -> list[str]:
    """The messages of mutating activities the worker refused in a run."""
    return [
        e.activity_task_failed_event_attributes.failure.message
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
        and "does not hold for run" in e.activity_task_failed_event_attributes.failure.message
    ]


# ---- the Temporal CLI, as a namespace user ---------------------------------------------------


def cli_reset(address: str, workflow_id: str, run_id: str, event_id: int) -> None:
    argv = [venv_binary("temporal"), "workflow", "reset", "--address", address]
    argv += ["--workflow-id", workflow_id, "--run-id", run_id, "--event-id", str(event_id)]
    argv += ["--reason", "adversary: act again on the recorded approval"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@dataclass
class ResetRun:
    point: ResetPoint
    run_id: str
    outcome: str  # "completed", or the failure's message
    refusals: list[str]


async def reset_and_follow(
    client: Client, address: str, workflow_id: str, original: str, point: ResetPoint
) -> ResetRun:
    """Reset the original run to `point` (the CLI terminates a reset run still running) and
    follow the new run to its end."""
    before = (await client.get_workflow_handle(workflow_id).describe()).run_id
    await asyncio.to_thread(cli_reset, address, workflow_id, original, point.event_id)

    async def new_run() -> str | None:
        run_id = (await client.get_workflow_handle(workflow_id).describe()).run_id
        return run_id if run_id not in (before, original) else None

    run_id = await until_async(new_run, f"{workflow_id}: the run reset to {point.event_id}")
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        await asyncio.wait_for(handle.result(), timeout=180)
        outcome = "completed"
    except WorkflowFailureError as err:
        outcome = str(err.cause)
    history = await handle.fetch_history()
    return ResetRun(point, run_id, outcome, guarded_refusals(list(history.events)))
