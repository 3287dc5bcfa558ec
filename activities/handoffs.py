"""Hand-offs: a run whose approver chose another procedure (api-errors pointing at the
database, OOM kills or a fresh deploy) starts it here.

An independent run, not a child: the started procedure must outlive the run that chose it
(a failover runs its own gate for up to hours), keep its usual workflow id (so a second start
for the resource finds it: "already running", never a second run) and be an ordinary run
(reset, terminated, listed like any other). The start is signed with the intake key as a
`handoff` proof naming the approver (activities/requesters.py): the approver's decision,
checked by the worker's decision guard before this runs, is what proves who asked.
"""

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from activities.approvals import Authority
from activities.requesters import SignedStart, input_digest, sign_start

# The approval parameter that names the procedure to start (workflows/handoffs.py).
CHOICE = "start"
PROOF_VALIDITY = timedelta(minutes=10)
MAX_ID = 400


class HandoffRequest(BaseModel):
    procedure: str = Field(min_length=1, max_length=32)
    workflow_type: str = Field(min_length=1, max_length=64)
    workflow_id: str = Field(min_length=1, max_length=MAX_ID)
    # The started procedure's input, validated by its model in the workflow.
    input: dict[str, Any]
    # The approvals of the gate that chose it: the decision guard checks them for this run.
    authority: Authority


class HandoffResult(BaseModel):
    workflow_id: str
    run_id: str
    # False: a run for that resource was already running (started by someone else): it is
    # the one linked, nothing was started twice.
    started: bool


class HandoffActivities:
    def __init__(self, client: Client, task_queue: str, intake_key: str | None) -> None:
        """`task_queue`: the environment's (the worker's own: a run hands off within it)."""
        self._client = client
        self._task_queue = task_queue
        self._intake_key = intake_key

    @activity.defn(name="handoffs.start")
    async def start(self, req: HandoffRequest) -> HandoffResult:
        # An approval that names no procedure took the gate's default (its recommendation,
        # the one the run asks to start); one that names another did not choose this.
        chosen = {a.params.get(CHOICE, req.procedure) for a in req.authority.approvals}
        if chosen != {req.procedure}:
            raise ApplicationError(
                f"procedure: {req.procedure!r} is not what the approvals chose "
                f"({', '.join(sorted(str(c) for c in chosen)) or 'nothing'})",
                type="NotChosen",
                non_retryable=True,
            )
        info = activity.info()
        memo = {"started_by": info.workflow_id, "started_by_run": info.workflow_run_id}
        try:
            handle = await self._client.start_workflow(
                req.workflow_type,
                self._signed(req),
                id=req.workflow_id,
                task_queue=self._task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                memo=memo,
            )
            return HandoffResult(
                workflow_id=req.workflow_id, run_id=handle.result_run_id or "", started=True
            )
        except WorkflowAlreadyStartedError as err:
            running = self._client.get_workflow_handle(req.workflow_id, run_id=err.run_id)
            theirs = await (await running.describe()).memo()
            # This activity's earlier attempt (its answer lost) started it: still ours.
            ours = theirs.get("started_by_run") == info.workflow_run_id
            return HandoffResult(workflow_id=req.workflow_id, run_id=err.run_id or "", started=ours)

    def _signed(self, req: HandoffRequest) -> dict[str, Any]:
        """Signed for the approver when the worker has the intake key; else unsigned (the
        started run then treats its requester as unproven: two people on P0/P1)."""
        if not self._intake_key:
            return req.input
        # The server's clock, which the started run is checked against.
        now = activity.info().current_attempt_scheduled_time
        start = SignedStart(
            kind="handoff",
            requester=str(req.input.get("requested_by", "")),
            workflow_type=req.workflow_type,
            workflow_id=req.workflow_id,
            input_digest=input_digest(req.input),
            issued_at=now,
            expires_at=now + PROOF_VALIDITY,
        )
        proof = sign_start(start, self._intake_key)
        return {**req.input, "requester_proof": proof.model_dump(mode="json")}
