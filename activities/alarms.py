"""Start a runbook from an alarm exactly once per resource and alarm episode.

Both the alarm webhook and the LLM spend watch come through here. The workflow id names the
resource, and signal-with-start (`alarm` signal, conflict policy USE_EXISTING) makes a storm
of deliveries start one workflow and record every further delivery on it. A run that already
ended after the alarm's episode began (a CloudWatch state change, an Alertmanager `startsAt`)
handled that episode: the delivery is acknowledged as suppressed, not started again.

Inputs and the signal argument are JSON objects here: this module starts any workflow type,
and the target workflow validates them with its own models.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel
from temporalio import activity
from temporalio.api.workflowservice.v1 import SignalWithStartWorkflowExecutionResponse
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

ALARM_SIGNAL = "alarm"

Action = Literal["started", "signalled", "suppressed", "not_running"]


class AlarmStart(BaseModel):
    workflow_type: str
    workflow_id: str
    task_queue: str
    input: dict[str, Any]
    # An AlarmDelivery (workflows.models) as JSON.
    delivery: dict[str, Any]
    # When the alarm's episode began: a run that ended after this handled it.
    episode_started_at: datetime


class AlarmRecord(BaseModel):
    """An OK / resolved notification: recorded on the running workflow, never starts one."""

    workflow_id: str
    delivery: dict[str, Any]


class AlarmOutcome(BaseModel):
    workflow_id: str
    run_id: str | None
    action: Action
    detail: str = ""


@dataclass(frozen=True)
class _Ended:
    run_id: str
    closed_at: datetime
    state: str
    seen: float  # time.monotonic() when described


class AlarmStarter:
    """Holds the Temporal client. When a run has ended, deliveries for its workflow id are
    serialized in this process, so the check of the ended run and a new start cannot
    interleave with a second delivery.

    An ended run is remembered for `remember_ended` seconds: the rest of a storm for an
    episode it handled is answered without a call to Temporal. (A run started meanwhile by
    someone else misses those deliveries in its timeline; nothing is ever started twice.)"""

    def __init__(self, client: Client, remember_ended: float = 60.0) -> None:
        self._client = client
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._ended: dict[str, _Ended] = {}
        self._remember = remember_ended

    @contextlib.asynccontextmanager
    async def _serial(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._locks.pop(key, None)

    async def start_once(self, req: AlarmStart) -> AlarmOutcome:
        if known := self._handled(req):
            return known
        try:
            # Atomic on the server: signals the running run, or starts the first one ever.
            handle = await self._signal_with_start(req, WorkflowIDReusePolicy.REJECT_DUPLICATE)
        except WorkflowAlreadyStartedError:  # no run is running, and one has ended
            async with self._serial(req.workflow_id):
                if known := self._handled(req):
                    return known
                if ended := await self._ended_after(req):
                    return ended
                handle = await self._signal_with_start(req, WorkflowIDReusePolicy.ALLOW_DUPLICATE)
                self._ended.pop(req.workflow_id, None)
        return AlarmOutcome(
            workflow_id=req.workflow_id,
            run_id=handle.result_run_id,
            action="started" if _started(handle) else "signalled",
        )

    async def _signal_with_start(
        self, req: AlarmStart, reuse: WorkflowIDReusePolicy
    ) -> WorkflowHandle[Any, Any]:
        return await self._client.start_workflow(
            req.workflow_type,
            req.input,
            id=req.workflow_id,
            task_queue=req.task_queue,
            start_signal=ALARM_SIGNAL,
            start_signal_args=[req.delivery],
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=reuse,
        )

    async def _ended_after(self, req: AlarmStart) -> AlarmOutcome | None:
        """The suppression when the latest run ended after the episode began, else None."""
        desc = await self._client.get_workflow_handle(req.workflow_id).describe()
        if desc.status == WorkflowExecutionStatus.RUNNING or desc.close_time is None:
            return None
        if len(self._ended) >= 10_000:
            self._ended.clear()
        state = desc.status.name.lower() if desc.status else "closed"
        self._ended[req.workflow_id] = _Ended(desc.run_id, desc.close_time, state, time.monotonic())
        return self._handled(req)

    def _handled(self, req: AlarmStart) -> AlarmOutcome | None:
        """Suppressed when a run that ended after the episode began is known, else None."""
        ended = self._ended.get(req.workflow_id)
        if ended is None or time.monotonic() - ended.seen > self._remember:
            return None
        if req.episode_started_at > ended.closed_at:
            return None  # a new episode after the last run: a new run
        return AlarmOutcome(
            workflow_id=req.workflow_id,
            run_id=ended.run_id,
            action="suppressed",
            detail=(
                f"this alarm episode (since {req.episode_started_at:%Y-%m-%d %H:%M:%S} UTC) was "
                f"handled by run {ended.run_id}, {ended.state} at {ended.closed_at:%H:%M:%S} UTC"
            ),
        )

    async def record(self, req: AlarmRecord) -> AlarmOutcome:
        handle = self._client.get_workflow_handle(req.workflow_id)
        try:
            await handle.signal(ALARM_SIGNAL, req.delivery)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            return AlarmOutcome(
                workflow_id=req.workflow_id,
                run_id=None,
                action="not_running",
                detail="no running workflow for this resource: nothing to record",
            )
        return AlarmOutcome(workflow_id=req.workflow_id, run_id=None, action="signalled")


def _started(handle: WorkflowHandle[Any, Any]) -> bool:
    """The server's `started` flag of the signal-with-start response (the SDK keeps the
    response on the handle but has no public accessor for the flag)."""
    response = getattr(handle, "_start_workflow_response", None)
    return isinstance(response, SignalWithStartWorkflowExecutionResponse) and response.started


class AlarmActivities:
    """The starter as an activity, for workflows that start runbooks (the spend watch)."""

    def __init__(self, starter: AlarmStarter) -> None:
        self._starter = starter

    @activity.defn(name="alarms.start_once")
    async def start_once(self, req: AlarmStart) -> AlarmOutcome:
        return await self._starter.start_once(req)
