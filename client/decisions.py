"""Signed decisions: what `runbook approve`, `runbook sign` and the demos send to a gate."""

from datetime import UTC, datetime, timedelta
from typing import cast

from temporalio.client import WorkflowHandle

from activities.approvals import SignedDecision, sign
from workflows.gate import GatedRunbook
from workflows.models import Approval, DecisionAck, Rejection

SIGNATURE_VALIDITY = timedelta(minutes=10)


def make_signed(
    workflow_id: str,
    run_id: str,
    gate: str,
    approver: str,
    key: str,
    *,
    approve: bool = True,
    params: dict[str, str] | None = None,
    comment: str = "",
    reason: str = "",
) -> Approval | Rejection:
    decision = SignedDecision(
        workflow_id=workflow_id,
        run_id=run_id,
        gate=gate,
        approve=approve,
        approver=approver,
        params=params or {},
        expires_at=datetime.now(UTC) + SIGNATURE_VALIDITY,
    )
    signature = sign(decision, key)
    if approve:
        return Approval(
            approver=approver,
            comment=comment,
            params=decision.params,
            expires_at=decision.expires_at,
            signature=signature,
        )
    return Rejection(
        approver=approver, reason=reason, expires_at=decision.expires_at, signature=signature
    )


async def send_decision(handle: WorkflowHandle, decision: Approval | Rejection) -> DecisionAck:
    """The gate's answer to a signed decision, sent by its Update. The SDK decodes the
    answer as the handler says (a DecisionAck); its type hints for a named async handler
    say coroutine, hence the cast."""
    if isinstance(decision, Approval):
        ack = await handle.execute_update(GatedRunbook.approve, decision)
    else:
        ack = await handle.execute_update(GatedRunbook.reject, decision)
    return cast(DecisionAck, ack)
