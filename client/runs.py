"""Connect to Temporal; start, find and query runbook runs."""

import os
from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from client.decisions import signed_start
from client.errors import BadInput, Unreachable
from settings import get_settings, temporal_client
from telemetry import process_tracer
from workflows.base import RunbookWorkflow
from workflows.models import RunbookInput, RunbookStatus

if TYPE_CHECKING:
    from workflows.registry import Procedure

QUERY_TIMEOUT = timedelta(seconds=10)


STACK_HINT = "is the stack up? Run `runbook stack up` (or set TEMPORAL_ADDRESS to your server)"


async def connect() -> Client:
    try:
        return await temporal_client(tracer=process_tracer("runbook-cli"))
    except RuntimeError as err:
        address = os.environ.get("TEMPORAL_ADDRESS", "localhost:7233")
        text = str(err)
        why = "connection refused" if "Connection refused" in text else text[:200]
        raise Unreachable(f"cannot reach Temporal at {address}: {why}; {STACK_HINT}") from None


async def existing(client: Client, workflow_id: str) -> WorkflowHandle:
    handle = client.get_workflow_handle(workflow_id)
    try:
        await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise BadInput(f"WORKFLOW_ID: no workflow with id {workflow_id!r}") from None
        raise
    return handle


async def query_status(handle: WorkflowHandle) -> RunbookStatus:
    return await handle.query(RunbookWorkflow.status, rpc_timeout=QUERY_TIMEOUT)


async def start_procedure(
    client: Client,
    procedure: "Procedure",
    inp: BaseModel,
    conflict: WorkflowIDConflictPolicy = WorkflowIDConflictPolicy.USE_EXISTING,
    key: str | None = None,
) -> WorkflowHandle:
    """Start (or join) the run for the input's resource, on the task queue of the input's
    environment, whose workers hold its AWS roles; with the requester's `key` the start is
    signed, which proves who asked (client/decisions.py)."""
    if key and isinstance(inp, RunbookInput):
        inp = signed_start(procedure, inp, key)
    profile = get_settings().profile(getattr(inp, "environment", None))
    return await client.start_workflow(
        procedure.workflow_type,
        inp,
        id=procedure.workflow_id(inp),
        task_queue=profile.task_queue,
        # A second start for the same resource joins the running workflow: never act twice.
        id_conflict_policy=conflict,
    )


async def start_or_join(
    client: Client, procedure: "Procedure", inp: BaseModel, key: str | None = None
) -> tuple[WorkflowHandle, bool]:
    """The new run for the resource (True), or the run already in flight for it (False), so
    the caller can say which and refuse what the running one cannot honour. With `key` the
    start is signed (start_procedure)."""
    try:
        fail = WorkflowIDConflictPolicy.FAIL
        return await start_procedure(client, procedure, inp, fail, key=key), True
    except WorkflowAlreadyStartedError as err:
        return client.get_workflow_handle(err.workflow_id, run_id=err.run_id), False
