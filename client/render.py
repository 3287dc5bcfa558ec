"""A run as a person reads it: its status, its link, a waiting gate as a row."""

from datetime import datetime
from typing import Any

from activities.notify import temporal_ui_run_url
from settings import get_settings
from workflows.models import PendingGate, RunbookStatus


def run_link(workflow_id: str, run_id: str) -> str:
    settings = get_settings()
    return temporal_ui_run_url(settings.temporal_ui_url, "default", workflow_id, run_id)


def render_status(status: RunbookStatus, state: str) -> str:
    lines = [
        f"{status.workflow_id}  {status.procedure}  {status.severity}  {state.lower()}",
        f"phase: {status.phase}" + (f"   outcome: {status.outcome}" if status.outcome else ""),
    ]
    if status.pending_gate:
        gate = status.pending_gate
        lines += [
            f"waiting for approval of {gate.gate!r} (requested by {gate.requested_by}, "
            f"expires {gate.expires_at:%H:%M:%S} UTC): {gate.summary}",
            *(f"  - {step}" for step in gate.plan),
        ]
    lines.append("timeline:")
    for step in status.timeline:
        took = ""
        if step.ended_at and step.ended_at != step.started_at:
            took = f" ({(step.ended_at - step.started_at).total_seconds():.1f}s)"
        lines.append(
            f"  {step.started_at:%H:%M:%S}  {step.outcome:<8} {step.name}{took}"
            + (f": {step.detail}" if step.detail else "")
        )
    return "\n".join(lines)


def pending_row(
    workflow_id: str, procedure: str, gate: PendingGate, now: datetime
) -> dict[str, Any]:
    return {
        "workflow_id": workflow_id,
        "procedure": procedure,
        "severity": gate.severity,
        "gate": gate.gate,
        "level": gate.level,
        "may_decide": gate.may_decide,
        "approvals_required": gate.approvals_required,
        "approved_by": gate.approved_by,
        "requested_by": gate.requested_by,
        "age_seconds": round((now - gate.requested_at).total_seconds()),
        "level_deadline": gate.level_deadline.isoformat() if gate.level_deadline else None,
        "summary": gate.summary,
    }
