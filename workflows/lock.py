"""One change at a time per resource: a lock is a workflow per resource (`ResourceLock`, id
`lock/<task queue>/<resource>`, e.g. `lock/runbooks-production/ecs/prod-revenue-context/api`:
an environment's runs share its task queue, see activities/locks.py).

- A request is an Update-with-start from a local activity of the requester
  (activities/locks.py): the answer says at once "granted" (a free lock: nothing more to
  wait for) or who holds it. A queued requester is granted later by the signal
  `lock_granted`, which it checks against the lock's own state before it believes it.
- The holder releases by the signal `release` when its block ends: done, failed or
  cancelled (a `finally`). A holder that was terminated cannot: the lock asks Temporal every
  `check_seconds` whether the holder's run still runs and releases a closed one; the lease
  (from the holder's own timeouts) bounds the hold if even that check keeps failing.
- FIFO; durable like any workflow (a worker or server restart loses neither holder nor
  queue); it continues as new every `continue_after` events and ends once it has been free,
  with nobody waiting, for `linger_seconds` (no timer is left behind).

A procedure takes its locks after the gate, right before its first mutation, holds them
through the verification of the effect and re-reads the resource once they are granted
(`exclusive(...)`, `recheck`): a plan that no longer holds ends the run `stale`. Several
resources are taken in one sorted order, so two runs never wait on each other.
"""

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.locks import (
        Holder,
        HolderRequest,
        HolderStatus,
        LockActivities,
        LockAnswer,
        LockEvent,
        LockGranted,
        LockInput,
        LockRequest,
        LockState,
        ReleaseRequest,
        StateRequest,
        lock_id,
    )

from workflows import metrics
from workflows import search_attributes as sa
from workflows.base import READ_RETRY, RunbookWorkflow
from workflows.models import Finding, RunbookResult

# One patch id for every procedure: runs recorded before locks existed replay without them.
PATCH = "resource-lock"
LINGER_PATCH = "lock-lingers-when-free"
GRANTED_SIGNAL = "lock_granted"
RELEASE_SIGNAL = "release"
QUEUE_MAX = 50
RECENT_MAX = 20
REQUEST_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=10)


# ---- resource names -------------------------------------------------------------------------


def ecs_service(cluster: str, service: str) -> str:
    return f"ecs/{cluster}/{service}"


def rds_instance(instance: str) -> str:
    return f"rds/{instance}"


def secret(secret_id: str) -> str:
    return f"secret/{secret_id}"


def listener(arn: str) -> str:
    return f"listener/{arn}"


def lease_for(*seconds: float) -> timedelta:
    """A lease covering a procedure's own bounds for its action and verification, plus a
    margin for the steps between them."""
    return timedelta(seconds=sum(seconds) + 600)


# ---- the lock --------------------------------------------------------------------------------


@workflow.defn(name="ResourceLock")
class ResourceLock:
    @workflow.init
    def __init__(self, inp: LockInput) -> None:
        self._state = inp.state or LockState(resource=inp.resource, environment=inp.environment)
        self._changed = False
        self._events_here = 0

    @workflow.run
    async def run(self, inp: LockInput) -> LockState:
        config = inp.config
        workflow.upsert_search_attributes(
            [sa.RESOURCE.value_set(inp.resource), sa.ENVIRONMENT.value_set(inp.environment)]
        )
        if not self._state.handled:  # started by its first request, handled at once
            with suppress(TimeoutError):
                await workflow.wait_condition(lambda: self._state.handled > 0, timeout=60)
        while True:
            await self._grant_next()
            holder = self._state.holder
            if holder is None and not self._state.queue:
                # Free and nobody waits: the lock waits a while for the next request, then
                # ends (no timer left behind); a later request starts it again.
                if await self._linger(config.linger_seconds):
                    continue
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self._idle():
                    return self._state
            elif holder is not None:
                left = (holder.lease_until - workflow.now()).total_seconds()
                if left <= 0:
                    self._free(holder, "lease expired", f"after {holder.request.lease_seconds:g}s")
                elif not await self._wait(min(config.check_seconds, left)):
                    await self._check(holder)
            if (
                self._events_here >= config.continue_after
                or workflow.info().is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(inp.model_copy(update={"state": self._state}))

    # ---- messages -----------------------------------------------------------------------------

    @workflow.update(name="request")
    def request(self, req: LockRequest) -> LockAnswer:
        state = self._state
        if state.holder and state.holder.request.request_id == req.request_id:
            return LockAnswer(granted=True)  # a retried request: the same one
        for ahead, queued in enumerate(state.queue):
            if queued.request_id == req.request_id:
                return LockAnswer(granted=False, holder=state.holder, ahead=ahead)
        self._count()
        if state.holder is None and not state.queue:
            self._hold(req)
            return LockAnswer(granted=True)
        state.queue.append(req)
        return LockAnswer(granted=False, holder=state.holder, ahead=len(state.queue) - 1)

    @request.validator
    def _validate_request(self, req: LockRequest) -> None:
        if (req.resource, req.environment) != (self._state.resource, self._state.environment):
            raise ValueError(
                f"resource: this lock is {self._state.environment}/{self._state.resource}, "
                f"not {req.environment}/{req.resource}"
            )
        if len(self._state.queue) >= QUEUE_MAX and not any(
            q.request_id == req.request_id for q in self._state.queue
        ):
            raise ValueError(f"queue: {QUEUE_MAX} requests already wait for this lock")

    @workflow.signal(name="release")
    def release(self, req: ReleaseRequest) -> None:
        state = self._state
        if state.holder and state.holder.request.request_id == req.request_id:
            self._free(state.holder, "released", req.reason)
            return
        for queued in state.queue:
            if queued.request_id == req.request_id:
                state.queue.remove(queued)
                self._event("withdrawn", queued.workflow_id, req.reason)
                self._count()
                return

    @workflow.query(name="state")
    def state(self) -> LockState:
        return self._state

    # ---- inside ---------------------------------------------------------------------------------

    def _idle(self) -> bool:
        return self._state.holder is None and not self._state.queue

    def _count(self) -> None:
        self._changed = True
        self._events_here += 1
        self._state.handled += 1

    async def _linger(self, seconds: float) -> bool:
        """True when a request came while the free lock waited (locks recorded before the
        wait existed end at once, as they did)."""
        if seconds <= 0 or not workflow.patched(LINGER_PATCH):
            return False
        return await self._wait(seconds)

    async def _wait(self, seconds: float) -> bool:
        """Until something changes (True) or `seconds` pass (False)."""
        try:
            await workflow.wait_condition(lambda: self._changed, timeout=seconds)
        except TimeoutError:
            return False
        self._changed = False
        return True

    def _hold(self, req: LockRequest) -> Holder:
        now = workflow.now()
        holder = Holder(
            request=req, granted_at=now, lease_until=now + timedelta(seconds=req.lease_seconds)
        )
        self._state.holder = holder
        self._event("granted", req.workflow_id, f"lease {req.lease_seconds:g}s")
        return holder

    def _free(self, holder: Holder, what: str, detail: str) -> None:
        if self._state.holder is holder:
            self._state.holder = None
            self._event(what, holder.request.workflow_id, detail)
            self._count()

    def _event(self, what: str, workflow_id: str, detail: str = "") -> None:
        recent = self._state.recent
        recent.append(
            LockEvent(at=workflow.now(), what=what, workflow_id=workflow_id, detail=detail)
        )
        del recent[:-RECENT_MAX]

    async def _grant_next(self) -> None:
        """The head of the queue gets the lock; a requester that has ended is skipped."""
        while self._state.holder is None and self._state.queue:
            req = self._state.queue.pop(0)
            holder = self._hold(req)
            grant = LockGranted(
                resource=req.resource, request_id=req.request_id, granted_at=holder.granted_at
            )
            try:
                await workflow.get_external_workflow_handle(
                    req.workflow_id, run_id=req.run_id
                ).signal(GRANTED_SIGNAL, grant)
            except Exception as err:  # the requester's run has ended: the next one
                self._free(holder, "requester gone", str(err)[:200])

    async def _check(self, holder: Holder) -> None:
        """Release a holder whose run has ended without releasing (terminated, timed out)."""
        try:
            status: HolderStatus = await workflow.execute_activity_method(
                LockActivities.holder_status,
                HolderRequest(workflow_id=holder.request.workflow_id, run_id=holder.request.run_id),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=READ_RETRY,
            )
        except ActivityError:
            return  # unknown: the lease still bounds the hold
        if not status.running:
            self._free(holder, "holder gone", f"its run is {status.status}")


# ---- the requester's side -------------------------------------------------------------------


class StalePlan(Exception):
    """Once the lock was granted, the resource was no longer what the approver approved."""


@asynccontextmanager
async def exclusive(
    run: RunbookWorkflow,
    resources: Sequence[str],
    lease: timedelta,
    recheck: Callable[[], Awaitable[str | None]] | None = None,
) -> AsyncIterator[None]:
    """Hold the locks of `resources` (taken in sorted order) for the block; `recheck` re-reads
    the resource once they are granted and says why the plan is stale (raises StalePlan).
    Released when the block ends, whatever the way (a failure, a cancellation)."""
    if not workflow.patched(PATCH):
        yield
        return
    asked: list[tuple[str, str, Any]] = []
    try:
        for resource in sorted(set(resources)):
            request_id = str(workflow.uuid4())
            asked.append((resource, request_id, workflow.now()))
            await _acquire(run, resource, request_id, lease)
        if recheck is not None and (reason := await recheck()):
            raise StalePlan(reason)
        yield
    except GeneratorExit:
        # The worker evicted the run from its cache: no workflow call may run now; the run,
        # replayed on a worker, reaches this block again and releases there.
        raise
    except BaseException:
        await _release_all(run, asked)
        raise
    await _release_all(run, asked)


async def _release_all(run: RunbookWorkflow, asked: list[tuple[str, str, Any]]) -> None:
    for resource, request_id, since in reversed(asked):
        await _release(run, resource, request_id, since)


async def _acquire(run: RunbookWorkflow, resource: str, request_id: str, lease: timedelta) -> None:
    info = workflow.info()
    environment = _environment(run)
    answer: LockAnswer = await workflow.execute_local_activity_method(
        LockActivities.request,
        LockRequest(
            resource=resource,
            environment=environment,
            request_id=request_id,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            procedure=run.procedure,
            lease_seconds=lease.total_seconds(),
            requested_at=workflow.now(),
        ),
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=REQUEST_RETRY,
    )
    if answer.granted:
        run.record(f"lock {resource}", "ok", "granted (it was free)")
        metrics.lock_waited(run.procedure, 0.0)
        return
    grants = _grants(run)
    waited_from = workflow.now()
    held_by = _held_by(answer)
    step = run.record(f"lock {resource}", "running", f"waiting: {held_by}")
    run.set_phase(f"waiting for lock {resource} ({held_by})")
    await run.notify(
        "info",
        f"{run.procedure}: waiting for lock {resource}",
        f"{info.workflow_id} acts on {resource} once the lock is free: {held_by}.",
        _fields(answer),
    )
    while True:
        await workflow.wait_condition(lambda: request_id in grants)
        if await _confirmed(resource, request_id):
            break
        grants.discard(request_id)
        run.record(f"lock {resource}", "refused", "a grant the lock did not make was ignored")
    waited = (workflow.now() - waited_from).total_seconds()
    metrics.lock_waited(run.procedure, waited)
    step.ended_at, step.outcome = workflow.now(), "ok"
    step.detail = f"granted after {waited:.0f}s waiting ({held_by})"
    run.set_phase("act")


def _environment(run: RunbookWorkflow) -> str:
    return run._input.environment


def _held_by(answer: LockAnswer) -> str:
    holder = answer.holder
    if holder is None:
        return f"{answer.ahead} request(s) ahead"
    text = f"held by {holder.request.workflow_id} since {holder.granted_at:%H:%M:%S} UTC"
    return text + (f", {answer.ahead} more ahead" if answer.ahead else "")


def _fields(answer: LockAnswer) -> dict[str, str]:
    holder = answer.holder
    fields = {"Ahead in the queue": str(answer.ahead)}
    if holder is not None:
        fields |= {
            "Held by": holder.request.workflow_id,
            "Since": f"{holder.granted_at:%Y-%m-%d %H:%M:%S} UTC",
            "Lease ends": f"{holder.lease_until:%H:%M:%S} UTC",
        }
    return fields


def _grants(run: RunbookWorkflow) -> set[str]:
    """Request ids the lock said were granted (signal `lock_granted`, set up on first use)."""
    grants: set[str] | None = run.__dict__.get("_lock_grants")
    if grants is None:
        found: set[str] = set()

        def granted(grant: LockGranted) -> None:
            found.add(grant.request_id)

        workflow.set_signal_handler(GRANTED_SIGNAL, granted)
        run.__dict__["_lock_grants"] = found
        grants = found
    return grants


async def _confirmed(resource: str, request_id: str) -> bool:
    """The lock's own state names this request as the holder (a forged signal does not)."""
    state: LockState | None = await workflow.execute_local_activity_method(
        LockActivities.state,
        StateRequest(task_queue=workflow.info().task_queue, resource=resource),
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=REQUEST_RETRY,
    )
    holder = state.holder if state else None
    return holder is not None and holder.request.request_id == request_id


async def _release(run: RunbookWorkflow, resource: str, request_id: str, since: Any) -> None:
    handle = workflow.get_external_workflow_handle(lock_id(workflow.info().task_queue, resource))
    try:
        await handle.signal(RELEASE_SIGNAL, ReleaseRequest(request_id=request_id, reason="done"))
    except Exception as err:  # the lock is gone: nothing is held
        run.record(f"unlock {resource}", "info", f"lock not signalled: {str(err)[:200]}")
        return
    held = (workflow.now() - since).total_seconds()
    run.record(f"unlock {resource}", "ok", f"released after {held:.0f}s")


async def stale(
    run: RunbookWorkflow, err: StalePlan, findings: list[Finding], plan: list[str]
) -> RunbookResult:
    """The end of a run whose approved plan no longer held once it had the lock."""
    summary = f"Stale plan, nothing changed: {err}"
    run.record("plan stale", "refused", str(err))
    await run.notify(
        "rejected", f"{run.procedure} stopped for {run.status().resource}", summary, {}
    )
    return run.finish("stale", summary, findings, plan)
