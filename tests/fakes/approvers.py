"""A roster and approver keys for tests, and signed decisions as `runbook approve` makes them."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.client import WorkflowHandle

from activities.approvals import SignedDecision, sign
from workflows.models import Approval, Rejection, RunbookStatus

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
