"""The runbooks' own metrics, beside the SDK's on the worker's Prometheus endpoint.

Workflow code emits through `workflow.metric_meter()`: the SDK drops what a replay emits, and
a metric adds no command to the history, so stored histories replay unchanged. Activities
emit through `activity.metric_meter()` (the attempts interceptor below). Nothing here when
the worker has no metrics endpoint: the meters are no-ops then.

Counters, not gauges, from workflow code: many runs share one label set, and a gauge keeps
only the last run's value. Waiting at a level = entered - left (per worker process). The
gates waiting now, in the whole namespace, and the oldest one's age come from Temporal's
visibility instead (`watch_gates`, the worker's own loop): gauges, the same on every worker.
"""

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import RPCError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from workflows import search_attributes as sa
from workflows.models import GateResult

log = logging.getLogger("runbook.metrics")

RUNS_STARTED = "runbook_runs_started"
RUNS_FINISHED = "runbook_runs_finished"
GATE_LEVELS_ENTERED = "runbook_gate_levels_entered"
GATE_LEVELS_LEFT = "runbook_gate_levels_left"
GATE_DECISION_SECONDS = "runbook_gate_decision_seconds"
GATES_TIMED_OUT = "runbook_gates_timed_out"
APPROVAL_TO_ACTION_SECONDS = "runbook_approval_to_action_seconds"
NOTIFICATIONS_FAILED = "runbook_notifications_failed"
ACTIVITY_ATTEMPTS_PAST_LIMIT = "runbook_activity_attempts_past_limit"
LOCK_WAIT_SECONDS = "runbook_lock_wait_seconds"
GATES_WAITING = "runbook_gates_waiting"
GATE_OLDEST_SECONDS = "runbook_gate_waiting_oldest_seconds"

# An attempt past this many is counted (the "activity attempts high" alert).
ATTEMPT_LIMIT = 3

# Histogram buckets (seconds): a decision takes minutes to hours; the action follows in
# seconds. Passed to the SDK's PrometheusConfig (settings.temporal_client).
BUCKETS: Mapping[str, Sequence[float]] = {
    GATE_DECISION_SECONDS: (30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400),
    APPROVAL_TO_ACTION_SECONDS: (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
    # Mostly 0 (a free lock); a queued run waits for the holder's action and verification.
    LOCK_WAIT_SECONDS: (0.5, 5, 30, 60, 300, 900, 1800, 3600),
}


def _count(name: str, description: str, **labels: str) -> None:
    workflow.metric_meter().create_counter(name, description).add(1, labels)


def run_started(procedure: str) -> None:
    _count(RUNS_STARTED, "Runbook runs started", procedure=procedure)


def run_finished(procedure: str, outcome: str) -> None:
    _count(RUNS_FINISHED, "Runbook runs ended, by outcome", procedure=procedure, outcome=outcome)


def gate_level(procedure: str, entered: str, left: str | None) -> None:
    """A gate opened at level `entered`, or escalated to it from `left`."""
    if left is not None:
        _count(GATE_LEVELS_LEFT, "Gate levels left", procedure=procedure, level=left)
    _count(GATE_LEVELS_ENTERED, "Gate levels entered", procedure=procedure, level=entered)


def gate_closed(
    procedure: str, level: str, opened: datetime, decision: GateResult
) -> datetime | None:
    """The gate's end at `level`: decided (time to decision) or timed out after its last
    level. Returns when an approval was taken, for `action_started`; else None."""
    _count(GATE_LEVELS_LEFT, "Gate levels left", procedure=procedure, level=level)
    if decision.timed_out or decision.decided_at is None:
        _count(GATES_TIMED_OUT, "Gates past their last level's deadline", procedure=procedure)
        return None
    outcome = "approved" if decision.approved else "rejected"
    seconds = (decision.decided_at - opened).total_seconds()
    workflow.metric_meter().create_histogram_float(
        GATE_DECISION_SECONDS, "Gate opened to decision taken", "s"
    ).record(seconds, {"procedure": procedure, "outcome": outcome})
    return decision.decided_at if decision.approved else None


def action_started(procedure: str, approved_at: datetime | None) -> None:
    """The first step after an approval taken at `approved_at` (None: not after one)."""
    if approved_at is None:
        return
    workflow.metric_meter().create_histogram_float(
        APPROVAL_TO_ACTION_SECONDS, "Approval taken to the action's first step", "s"
    ).record((workflow.now() - approved_at).total_seconds(), {"procedure": procedure})


def lock_waited(procedure: str, seconds: float) -> None:
    """A resource lock granted to a run after `seconds` of waiting (0: it was free)."""
    workflow.metric_meter().create_histogram_float(
        LOCK_WAIT_SECONDS, "Lock requested to granted", "s"
    ).record(seconds, {"procedure": procedure})


def notification_failed(procedure: str, channel: str, kind: str) -> None:
    _count(
        NOTIFICATIONS_FAILED,
        "Notifications that failed after their retries",
        procedure=procedure,
        channel=channel,
        kind=kind,
    )


class _CountAttempts(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if activity.info().attempt > ATTEMPT_LIMIT:
            activity.metric_meter().create_counter(
                ACTIVITY_ATTEMPTS_PAST_LIMIT, f"Activity attempts past the {ATTEMPT_LIMIT}th"
            ).add(1)  # the SDK's meter labels it with activity_type
        return await self.next.execute_activity(input)


class ActivityAttemptsInterceptor(Interceptor):
    """Counts activity attempts past ATTEMPT_LIMIT (labelled by activity type)."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CountAttempts(next)


# ---- gates waiting now (Temporal's visibility) --------------------------------------------------

WAITING_QUERY = 'ExecutionStatus = "Running" AND RunbookGate = "waiting"'
GateKey = tuple[str, str, str, str]  # procedure, severity, level, environment
GATE_LABELS = ("procedure", "severity", "level", "environment")


async def gates_waiting(client: Client, now: datetime) -> dict[GateKey, tuple[int, float]]:
    """Runs waiting at a gate, by procedure, severity, level and environment: how many, and
    the oldest's age in seconds (from its run's start: its gate opened after a diagnosis of
    minutes)."""
    found: dict[GateKey, tuple[int, float]] = {}
    async for run in client.list_workflows(WAITING_QUERY):
        attrs = run.typed_search_attributes
        key = (
            attrs.get(sa.PROCEDURE) or run.workflow_type,
            attrs.get(sa.SEVERITY) or "",
            attrs.get(sa.GATE_LEVEL) or "",
            attrs.get(sa.ENVIRONMENT) or "",
        )
        count, oldest = found.get(key, (0, 0.0))
        found[key] = count + 1, max(oldest, (now - run.start_time).total_seconds())
    return found


async def watch_gates(
    client: Client,
    interval: float = 30.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Every `interval`: the gauges of the gates waiting, on the metrics of the client's
    runtime (a label set seen before and empty now is set to 0, so a gate decided leaves no
    stale series). Runs until cancelled."""
    meter = (client.service_client.config.runtime or Runtime.default()).metric_meter
    waiting = meter.create_gauge(GATES_WAITING, "Gates waiting for a decision now")
    oldest = meter.create_gauge_float(
        GATE_OLDEST_SECONDS, "Age of the oldest run waiting at a gate (from its start)", "s"
    )
    seen: set[GateKey] = set()
    while True:
        try:
            now_waiting = await gates_waiting(client, clock())
        except RPCError as err:  # visibility unavailable: the gauges keep their last value
            log.warning("gates waiting not counted: %s", err.message)
        else:
            for key in seen | set(now_waiting):
                count, age = now_waiting.get(key, (0, 0.0))
                labels = dict(zip(GATE_LABELS, key, strict=True))
                waiting.set(count, labels)
                oldest.set(age, labels)
            seen |= set(now_waiting)
        await asyncio.sleep(interval)
