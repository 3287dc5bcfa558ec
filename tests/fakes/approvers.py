"""A roster and approver keys for tests; starts as `runbook start` makes them (signed, under
the id that names the resource) and signed decisions as `runbook approve` makes them."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment

from activities.approvals import SignedDecision, sign
from client.decisions import signed_start
from workflows.models import Approval, Rejection, RunbookInput, RunbookStatus
from workflows.registry import PROCEDURES

ROSTER = {
    "alice": "on-call",
    "bob": "on-call",
    "erin": "engineering-manager",
    "carol": "cto",
}


def key_of(name: str) -> str:
    return f"test-key-of-{name}"


def write_roster(directory: Path) -> tuple[Path, Path]:
    roster = directory / "roster.toml"
    keys = directory / "approver-keys.toml"
    roster.write_text("[people]\n" + "".join(f'{n} = "{r}"\n' for n, r in ROSTER.items()))
    keys.write_text("[keys]\n" + "".join(f'{n} = "{key_of(n)}"\n' for n in ROSTER))
    return roster, keys


async def signed(
    handle: WorkflowHandle,
    approver: str,
    *,
    approve: bool = True,
    params: dict[str, str] | None = None,
    key: str | None = None,
    expires_in: timedelta = timedelta(minutes=10),
    reason: str = "not now",
) -> Approval | Rejection:
    """Sign for the gate the run has open now, with the approver's key unless told."""
    status: RunbookStatus = await handle.query("status", result_type=RunbookStatus)
    assert status.pending_gate, "no gate is open"
    run_id = (await handle.describe()).run_id
    decision = SignedDecision(
        workflow_id=handle.id,
        run_id=run_id,
        gate=status.pending_gate.gate,
        approve=approve,
        approver=approver,
        params=params or {},
        expires_at=datetime.now(UTC) + expires_in,
    )
    signature = sign(decision, key or key_of(approver))
    if approve:
        return Approval(
            approver=approver,
            params=decision.params,
            expires_at=decision.expires_at,
            signature=signature,
        )
    return Rejection(
        approver=approver, reason=reason, expires_at=decision.expires_at, signature=signature
    )


async def start_run(
    env: WorkflowEnvironment,
    inp: RunbookInput,
    task_queue: str,
    *,
    signed: bool = True,
    key: str | None = None,
) -> WorkflowHandle[Any, Any]:
    """Start a procedure as `runbook start` does: under the id that names its resource (a run
    an earlier test left with that id is ended), signed with the requester's test key (or
    `key`) at the server's time (the time-skipping server's clock runs ahead of ours)."""
    procedure = next(p for p in PROCEDURES.values() if type(inp) is p.input_model)
    if signed:
        key = key or key_of(inp.requested_by)
        inp = signed_start(procedure, inp, key, await env.get_current_time())
    return await env.client.start_workflow(
        procedure.workflow.run,  # type: ignore[attr-defined]
        inp,
        id=procedure.workflow_id(inp),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
    )
