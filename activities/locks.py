"""The client side of the resource locks (workflows/lock.py): ask a lock for a resource,
read a lock's state, and tell the lock whether its holder still runs.

A request is an Update-with-start on the lock's workflow (`lock/<task queue>/<resource>`):
it starts the lock when none runs, and its answer says at once whether the lock was granted
or who holds it. On a free lock that is the whole acquisition: one local activity, no
signal round trip. The Update id is the request id, and the lock keeps request ids in its
state, so a retried request (a lost answer, a worker crash) is the same request.
"""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

LOCK_WORKFLOW = "ResourceLock"
REQUEST_UPDATE = "request"
STATE_QUERY = "state"
# Workflow ids, resource names and request ids an attacker with namespace access could send:
# every field of a lock message is bounded.
ID_MAX = 1000
RESOURCE_MAX = 400


def lock_id(task_queue: str, resource: str) -> str:
    """The lock workflow's id. Every run that may change a resource of an environment runs
    on that environment's task queue (one an environment), and so does the lock: keyed by the
    task queue, a lock is never left on a queue no worker polls (a test's, say)."""
    return f"lock/{task_queue}/{resource}"


class LockConfig(BaseModel):
    """How a lock behaves; the worker's settings, passed to a lock when a request starts it."""

    # How often the lock asks Temporal whether its holder still runs: a terminated holder
    # is released within about this long, not only at the end of its lease.
    check_seconds: float = Field(15.0, ge=0.1, le=3600)
    # Events a lock handles before it continues as new (its history stays short).
    continue_after: int = Field(200, ge=2, le=10_000)
    # How long a free lock stays up for the next request before it ends: a procedure's
    # second step, or the next run in a burst, finds it running instead of starting it again
    # (or meeting it as it ends and retrying).
    linger_seconds: float = Field(30.0, ge=0, le=3600)


class LockRequest(BaseModel):
    resource: str = Field(min_length=1, max_length=RESOURCE_MAX)
    environment: str = Field(min_length=1, max_length=32)
    request_id: str = Field(min_length=1, max_length=64)
    workflow_id: str = Field(min_length=1, max_length=ID_MAX)
    run_id: str = Field(min_length=1, max_length=64)
    procedure: str = Field("", max_length=64)
    # How long the holder may keep the lock at most (it releases it when done).
    lease_seconds: float = Field(gt=0, le=7 * 24 * 3600)
    requested_at: datetime


class Holder(BaseModel):
    request: LockRequest
    granted_at: datetime
    lease_until: datetime


class LockAnswer(BaseModel):
    granted: bool
    # When not granted: who holds the lock, and how many requests are ahead of this one.
    holder: Holder | None = None
    ahead: int = 0


class LockEvent(BaseModel):
    at: datetime
    what: str  # "granted", "released", "lease expired", "holder gone", ...
    workflow_id: str
    detail: str = ""


class LockState(BaseModel):
    resource: str
    environment: str
    holder: Holder | None = None
    queue: list[LockRequest] = []
    # The latest grants and releases, newest last (bounded).
    recent: list[LockEvent] = []
    handled: int = 0


class LockGranted(BaseModel):
    """Signal `lock_granted` to a requester that waited."""

    resource: str = Field(max_length=RESOURCE_MAX)
    request_id: str = Field(max_length=64)
    granted_at: datetime


class ReleaseRequest(BaseModel):
    """Signal `release` to the lock: the holder is done, or a waiter gives up its place."""

    request_id: str = Field(min_length=1, max_length=64)
    reason: str = Field("done", max_length=200)


class StateRequest(BaseModel):
    task_queue: str = Field(max_length=200)
    resource: str = Field(max_length=RESOURCE_MAX)


class HolderRequest(BaseModel):
    workflow_id: str = Field(max_length=ID_MAX)
    run_id: str = Field(max_length=64)


class HolderStatus(BaseModel):
    running: bool
    status: str  # RUNNING, COMPLETED, TERMINATED, ... or NOT_FOUND


class LockInput(BaseModel):
    resource: str = Field(min_length=1, max_length=RESOURCE_MAX)
    environment: str = Field(min_length=1, max_length=32)
    config: LockConfig = LockConfig()
    # Carried over when the lock continues as new.
    state: LockState | None = None


async def read_state(client: Client, task_queue: str, resource: str) -> LockState | None:
    """The lock's state by query; None when no lock runs for the resource."""
    handle = client.get_workflow_handle(lock_id(task_queue, resource))
    try:
        return await handle.query(STATE_QUERY, result_type=LockState)
    except (RPCError, WorkflowQueryFailedError) as err:
        if isinstance(err, RPCError) and err.status != RPCStatusCode.NOT_FOUND:
            raise
        return None


class LockActivities:
    def __init__(self, config: LockConfig | None = None) -> None:
        self._config = config or LockConfig()

    @activity.defn(name="locks.request")
    async def request(self, req: LockRequest) -> LockAnswer:
        """Run as a local activity of the requester: the lock starts on its task queue."""
        start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            LOCK_WORKFLOW,
            LockInput(resource=req.resource, environment=req.environment, config=self._config),
            id=lock_id(activity.info().task_queue, req.resource),
            task_queue=activity.info().task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )
        return await activity.client().execute_update_with_start_workflow(
            REQUEST_UPDATE,
            req,
            start_workflow_operation=start,
            id=req.request_id,
            result_type=LockAnswer,
        )

    @activity.defn(name="locks.state")
    async def state(self, req: StateRequest) -> LockState | None:
        return await read_state(activity.client(), req.task_queue, req.resource)

    @activity.defn(name="locks.holder_status")
    async def holder_status(self, req: HolderRequest) -> HolderStatus:
        """Whether the holder's run still runs (the lock releases a terminated one)."""
        handle = activity.client().get_workflow_handle(req.workflow_id, run_id=req.run_id)
        try:
            desc = await handle.describe()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            return HolderStatus(running=False, status="NOT_FOUND")
        status = desc.status or WorkflowExecutionStatus.RUNNING
        return HolderStatus(running=status == WorkflowExecutionStatus.RUNNING, status=status.name)
