"""Start a runbook from an alarm exactly once per resource and alarm episode.

Both the alarm webhook and the LLM spend watch come through here. The workflow id names the
resource, and signal-with-start (`alarm` signal, conflict policy USE_EXISTING) makes a storm
of deliveries start one workflow and record every further delivery on it. A run that already
ended after the alarm's episode began (a CloudWatch state change, an Alertmanager `startsAt`)
handled that episode: the delivery is acknowledged as suppressed, not started again.

Inputs and the signal argument are JSON objects here: this module starts any workflow type,
and the target workflow validates them with its own models.

A storm's repeats reach a run together (`Coalescer`): each signal is a history event, and a
run's history must stay small however long the storm lasts. The webhook signs what it starts
with the intake's key (activities/requesters.py), so the worker can tell a start that came
through a verified alarm from one that only says it did.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel
from temporalio import activity
from temporalio.api.workflowservice.v1 import SignalWithStartWorkflowExecutionResponse
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.requesters import MACHINE_REQUESTERS, SignedStart, input_digest, sign_start

log = logging.getLogger("runbook.alarms")

ALARM_SIGNAL = "alarm"
# How long an intake-signed start may be used for: it is used at once.
INTAKE_PROOF_VALIDITY = timedelta(minutes=10)

Action = Literal["started", "signalled", "suppressed", "not_running", "coalesced"]


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


Send = Callable[[dict[str, Any]], Awaitable["AlarmOutcome"]]


@dataclass
class _Window:
    interval: float
    sent_at: float  # time.monotonic() of the last send
    held: int = 0  # deliveries held since, to send as one
    latest: tuple[dict[str, Any], Send] | None = None
    flush: asyncio.Task[None] | None = field(default=None, repr=False)


class Coalescer:
    """Repeats of one alarm state for one workflow are sent together: the first at once; the
    ones after it are held and sent as one delivery, with their count, when the interval is
    over. The interval doubles while the storm lasts (`first` up to `longest`) and starts
    again once the alarm is quiet: a day-long storm adds a few hundred signals to a run's
    history, not one a delivery. (Held counts live in this process: a crash of the webhook
    loses counts of repeats, never an alarm; the first of a storm is sent at once.)"""

    def __init__(self, first: float = 10.0, longest: float = 300.0) -> None:
        self._first = first
        self._longest = longest
        self._windows: dict[tuple[str, str, str, str], _Window] = {}

    async def send(
        self, workflow_id: str, episode: str, delivery: dict[str, Any], send: Send
    ) -> AlarmOutcome:
        """`episode`: deliveries of another episode of the alarm are never held together."""
        key = (workflow_id, str(delivery.get("alarm")), str(delivery.get("state")), episode)
        now = time.monotonic()
        window = self._windows.get(key)
        if window and now - window.sent_at < window.interval:
            window.held += int(delivery.get("count", 1))
            window.latest = (delivery, send)
            if window.flush is None:
                window.flush = asyncio.create_task(self._flush(key, window))
            return AlarmOutcome(
                workflow_id=workflow_id,
                run_id=None,
                action="coalesced",
                detail=f"counted; sent to the run with the storm's other repeats within "
                f"{window.interval:g}s",
            )
        storming = window is not None and now - window.sent_at < 2 * window.interval
        interval = min(2 * window.interval, self._longest) if window and storming else self._first
        self._sweep(now)
        self._windows[key] = window = _Window(interval=interval, sent_at=now)
        outcome = await send(delivery)
        if outcome.action not in ("started", "signalled") and window.flush is None:
            # Nothing running took it (suppressed, not running): the next one is sent at once.
            self._windows.pop(key, None)
        return outcome

    async def _flush(self, key: tuple[str, str, str, str], window: _Window) -> None:
        await asyncio.sleep(max(window.sent_at + window.interval - time.monotonic(), 0))
        assert window.latest is not None
        delivery, send = window.latest
        held = window.held
        window.held, window.latest, window.flush = 0, None, None
        window.sent_at = time.monotonic()
        window.interval = min(2 * window.interval, self._longest)
        try:
            await send({**delivery, "count": held})
        except Exception as err:  # answered 202 already: say so where someone looks
            log.warning("%s: %d held alarm deliveries not sent: %r", key[0], held, err)

    def _sweep(self, now: float) -> None:
        if len(self._windows) < 10_000:
            return
        for key, window in list(self._windows.items()):
            if window.flush is None and now - window.sent_at > 2 * window.interval:
                del self._windows[key]


class AlarmStarter:
    """Holds the Temporal client. When a run has ended, deliveries for its workflow id are
    serialized in this process, so the check of the ended run and a new start cannot
    interleave with a second delivery.

    An ended run is remembered for `remember_ended` seconds: the rest of a storm for an
    episode it handled is answered without a call to Temporal. (A run started meanwhile by
    someone else misses those deliveries in its timeline; nothing is ever started twice.)

    The webhook's starter has an `intake_key` (what it starts for an alarm is signed with it)
    and a `coalescer` (a storm's repeats reach the run together). The worker's own starter
    (the schedules' workflows, one delivery a tick) has neither: any namespace user can start
    those workflows, and Temporal lets a start claim any schedule id, so they prove nothing."""

    def __init__(
        self,
        client: Client,
        remember_ended: float = 60.0,
        *,
        intake_key: str | None = None,
        coalescer: Coalescer | None = None,
    ) -> None:
        self._client = client
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._ended: dict[str, _Ended] = {}
        self._remember = remember_ended
        self._intake_key = intake_key
        self._coalescer = coalescer

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
        async def send(delivery: dict[str, Any]) -> AlarmOutcome:
            return await self._start_once(req.model_copy(update={"delivery": delivery}))

        episode = req.episode_started_at.isoformat()
        return await self._coalesced(req.workflow_id, episode, req.delivery, send)

    async def _coalesced(
        self, workflow_id: str, episode: str, delivery: dict[str, Any], send: Send
    ) -> AlarmOutcome:
        if self._coalescer is None:
            return await send(delivery)
        return await self._coalescer.send(workflow_id, episode, delivery, send)

    async def _start_once(self, req: AlarmStart) -> AlarmOutcome:
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
            self._signed(req),
            id=req.workflow_id,
            task_queue=req.task_queue,
            start_signal=ALARM_SIGNAL,
            start_signal_args=[req.delivery],
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=reuse,
        )

    def _signed(self, req: AlarmStart) -> dict[str, Any]:
        """The input, signed by the intake when it starts for an alarm (or schedule)."""
        requester = str(req.input.get("requested_by", ""))
        if not self._intake_key or not requester.startswith(MACHINE_REQUESTERS):
            return req.input
        now = datetime.now(UTC)
        start = SignedStart(
            kind="intake",
            requester=requester,
            workflow_type=req.workflow_type,
            workflow_id=req.workflow_id,
            input_digest=input_digest(req.input),
            issued_at=now,
            expires_at=now + INTAKE_PROOF_VALIDITY,
        )
        proof = sign_start(start, self._intake_key)
        return {**req.input, "requester_proof": proof.model_dump(mode="json")}

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
        async def send(delivery: dict[str, Any]) -> AlarmOutcome:
            return await self._record(req.model_copy(update={"delivery": delivery}))

        return await self._coalesced(req.workflow_id, "", req.delivery, send)

    async def _record(self, req: AlarmRecord) -> AlarmOutcome:
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
