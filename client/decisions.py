"""Signed decisions: what `runbook approve`, `runbook sign` and the demos send to a gate."""

from datetime import UTC, datetime, timedelta

from activities.approvals import SignedDecision, sign
from workflows.models import Approval, Rejection, Signed

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
) -> Signed:
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
