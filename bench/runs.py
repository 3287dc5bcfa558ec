"""Runs of the procedures for the benchmarks: the incident each one is run on, starting it
through the CLI's client path, following its history to the gate, deciding it as bob."""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateStage

from bench.common import activity_type, event_seconds, upserted
from cli.runs import build_input
from client.decisions import make_signed, send_decision
from client.runs import query_status, start_procedure
from demos.kafka_lag import KAFKA_INCIDENT
from workflows.gate import GatedRunbook
from workflows.models import Approval
from workflows.registry import Procedure

# The incident each procedure is run on; a procedure not named here gets
# POST /control/incidents/<its name> with {}, when the sandbox has that route.
INCIDENTS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "kafka-lag": ("kafka-lag", KAFKA_INCIDENT),
    "api-errors": ("api-errors", {"cause": "capacity"}),
    "triage": ("kafka-lag", KAFKA_INCIDENT),
}
# kafka-lag and api-errors measure a rate over a window by design; this is the smallest
# window each accepts, so a figure is the runbook's own cost without the wait.
SMALL_WINDOW: dict[str, list[str]] = {
    "kafka-lag": ["sample_seconds=0"],
    "api-errors": ["error_window_seconds=0.5"],
}
# Activities that change something: "the first mutating activity" after an approval.
MUTATING = {
    "rds.force_failover",
    "ecs.scale_service",
    "ecs.force_new_deployment",
    "ecs.register_memory_revision",
    "ecs.use_task_definition",
    "ecs.update_service",
    "secrets.set_number",
    "acm.request_certificate",
    "route53.upsert_record",
    "elb.set_listener_certificate",
}
# The gate's own activities (checking the signature, notifying, paging, recording).
BOOKKEEPING = ("approvals.", "notify.", "incidents.")
DONE = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
}
ACTIVITY_CLOSED = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
}


def cli_args(sets: list[str], severity: str = "P1") -> argparse.Namespace:
    """What `runbook start PROCEDURE --set ... --requested-by alice` parses to."""
    return argparse.Namespace(
        set=sets, severity=severity, dry_run=False, requested_by="alice", json=True
    )


async def inject(sandbox: httpx.AsyncClient, name: str) -> str:
    """Reset the sandbox and inject the procedure's incident; returns what was injected."""
    (await sandbox.post("/control/reset")).raise_for_status()
    (await sandbox.post("/control/ecs", json={"task_start_seconds": 1})).raise_for_status()
    incident, body = INCIDENTS.get(name, (name, {}))
    reply = await sandbox.post(f"/control/incidents/{incident}", json=body)
    if reply.status_code == 404:
        return "none (the sandbox has no incident of that name)"
    reply.raise_for_status()
    if incident == "kafka-lag":  # the lag builds up: wait until /health/workers says so
        deadline = time.monotonic() + 60
        while (await sandbox.get("/health/workers")).status_code != 503:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    return incident


async def start(
    client: Client,
    procedure: Procedure,
    sets: list[str],
    severity: str = "P1",
    key: str | None = None,
) -> tuple[WorkflowHandle, float]:
    """Start as `runbook start` does (signed with alice's `key`: then bob's approval alone
    opens a P1 gate); returns the handle and time.time() before the call."""
    inp = build_input(procedure, cli_args(sets, severity))
    t0 = time.time()
    return await start_procedure(client, procedure, inp, key=key), t0


@dataclass
class GateRun:
    gate: float | None = None  # start call to gate open, seen by the client (s)
    slack: float | None = None  # start call to the approval request delivered (s)
    ended: float | None = None  # start call to the end (runs without a gate)
    parts: dict[str, float] = field(default_factory=dict)  # where the time went (server)
    cli_wall: float | None = None
    events: list[HistoryEvent] = field(default_factory=list)


async def to_gate(handle: WorkflowHandle, t0: float) -> GateRun:
    """Read the history as it grows (long poll) until the gate opened and its Slack request
    went out, or the run ended. Times from `t0` (time.time() before the start call)."""
    run = GateRun()
    slack_id = None
    async for event in handle.fetch_history_events(wait_new_event=True):
        run.events.append(event)
        now = time.time() - t0
        if run.gate is None and upserted(event, "RunbookGate") == "waiting":
            run.gate = now
        elif run.gate is not None and slack_id is None and activity_type(event) == "notify.slack":
            slack_id = event.event_id
        elif slack_id is not None and closes(event) == slack_id:
            run.slack = now
            break
        if event.event_type in DONE:
            run.ended = now
            break
    run.parts = breakdown(run.events)
    return run


def closes(event: HistoryEvent) -> int | None:
    """The scheduled event id of the activity this event closes, else None."""
    kind = event.event_type
    if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
        return int(event.activity_task_completed_event_attributes.scheduled_event_id)
    if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
        return int(event.activity_task_failed_event_attributes.scheduled_event_id)
    if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
        return int(event.activity_task_timed_out_event_attributes.scheduled_event_id)
    if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
        return int(event.activity_task_canceled_event_attributes.scheduled_event_id)
    return None


def breakdown(seen: list[HistoryEvent]) -> dict[str, float]:
    """Server-side, up to the gate: start -> first workflow task started; the diagnosis
    (first activity scheduled to the last one closed before the escalation plan); the
    escalation plan activity; its completion -> the gate open."""
    if not seen:
        return {}
    start_at = event_seconds(seen[0])
    parts: dict[str, float] = {}
    first = next(
        (e for e in seen if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED), None
    )
    if first:
        parts["first task"] = event_seconds(first) - start_at
    plan = next((e for e in seen if activity_type(e) == "approvals.plan_escalation"), None)
    limit = plan.event_id if plan else seen[-1].event_id + 1
    scheduled = [e for e in seen if activity_type(e) and e.event_id < limit]
    closed = [e for e in seen if closes(e) is not None and e.event_id < limit]
    if scheduled and closed:
        parts["diagnosis"] = event_seconds(closed[-1]) - event_seconds(scheduled[0])
    gate = next((e for e in seen if upserted(e, "RunbookGate") == "waiting"), None)
    if plan is not None:
        done = next((e for e in seen if closes(e) == plan.event_id), None)
        if done is not None:
            parts["escalation plan"] = event_seconds(done) - event_seconds(plan)
            if gate is not None:
                parts["to gate"] = event_seconds(gate) - event_seconds(done)
    if gate is not None:
        parts["total"] = event_seconds(gate) - start_at
    return parts


async def decide(
    handle: WorkflowHandle,
    key: str,
    approve: bool,
    who: str = "bob",
    wait: bool = True,
    gate: str | None = None,
) -> tuple[float, float]:
    """Sign and send a decision on the open gate (approve, or reject with a reason), as
    `runbook approve` does (which asks the run for its gate; a known `gate` name and the
    handle's run id spare that query). `wait=False` returns once the Update is accepted,
    not when its handler (the signature check) is done. Returns time.time() when it was
    sent and when the call returned."""
    if gate is None or handle.result_run_id is None:
        status = await query_status(handle)
        if status.pending_gate is None:
            raise RuntimeError(f"{handle.id}: no gate open (phase {status.phase})")
        gate = status.pending_gate.gate
    run_id = handle.result_run_id or (await handle.describe()).run_id
    signed = make_signed(
        handle.id,
        run_id,
        gate,
        who,
        key,
        approve=approve,
        reason="" if approve else "benchmark run",
    )
    sent = time.time()
    accepted = WorkflowUpdateStage.ACCEPTED
    if wait:
        await send_decision(handle, signed)
    elif isinstance(signed, Approval):
        await handle.start_update(GatedRunbook.approve, signed, wait_for_stage=accepted)
    else:
        await handle.start_update(GatedRunbook.reject, signed, wait_for_stage=accepted)
    return sent, time.time()


async def finish(handle: WorkflowHandle, timeout: float = 120, quiet: bool = False) -> None:
    try:
        await asyncio.wait_for(handle.result(), timeout=timeout)
    except Exception as err:  # a failed run still ended; say so and go on
        if not quiet:
            print(f"    run {handle.id} ended with {type(err).__name__}: {err}", flush=True)


@dataclass
class ActionRun:
    activity: str = ""
    scheduled: float | None = None  # update accepted -> mutating activity scheduled (s)
    started: float | None = None  # update accepted -> its attempt started on the worker (s)
    between: list[str] = field(default_factory=list)  # activities run in between
    # Each activity after the approval: (name, scheduled, closed), seconds after it.
    steps: list[tuple[str, float, float | None]] = field(default_factory=list)
    accepted_at: float | None = None  # the UpdateAccepted event's time (epoch seconds)


async def to_action(handle: WorkflowHandle) -> ActionRun:
    """After an approval was sent: follow the history to the first mutating activity (or the
    first one that is not the gate's own) and wait until it closed, so its Started event
    (written when the attempt ends) is there. Times from the UpdateAccepted event."""
    run = ActionRun()
    accepted: float | None = None
    target: int | None = None
    scheduled: dict[int, tuple[str, float]] = {}
    closed: dict[int, float] = {}
    async for event in handle.fetch_history_events(wait_new_event=True):
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED and accepted is None:
            accepted = run.accepted_at = event_seconds(event)
            continue
        if accepted is None:
            continue
        at = event_seconds(event) - accepted
        if (name := activity_type(event)) is not None:
            scheduled[event.event_id] = (name, at)
            if target is None and (name in MUTATING or not name.startswith(BOOKKEEPING)):
                target, run.activity, run.scheduled = event.event_id, name, at
            elif target is None:
                run.between.append(name)
        if (
            kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
            and event.activity_task_started_event_attributes.scheduled_event_id == target
        ):
            run.started = at
        if (done := closes(event)) is not None:
            closed[done] = at
            if done == target:
                break
        if kind in DONE:
            break
    run.steps = [(name, at, closed.get(i)) for i, (name, at) in scheduled.items()]
    return run
