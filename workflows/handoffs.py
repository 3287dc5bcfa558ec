"""Hand-offs: a run whose diagnosis points at another procedure offers it at its gate; the
approver chooses one (`--set start=<procedure>`, one of those offered) and the run starts it
(activities/handoffs.py: an independent run under its usual workflow id, with its own gate).
Both runs link the other: timelines, and the incident log's `started_by` / `started`."""

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.handoffs import CHOICE, HandoffActivities, HandoffRequest, HandoffResult

from workflows.base import MUTATE_RETRY
from workflows.gate import GatedRunbook
from workflows.ids import workflow_id
from workflows.models import GateResult, ParamSpec, RunbookInput

GATE = "hand-off"


def choice(offered: list[str]) -> ParamSpec:
    """The approval parameter naming what to start: one of `offered`, the first by default."""
    return ParamSpec(
        name=CHOICE,
        choices=offered,
        help="the procedure to start; its own gate decides what it changes",
    )


def start_command(procedure: str, severity: str) -> str:
    return f"runbook start {procedure} --severity {severity}"


def handoff_fields(mine: RunbookInput, decision: GateResult) -> dict[str, Any]:
    """What a started procedure's input takes from the run that chose it: its severity and
    environment, the approver who chose it as requester, and the link back."""
    return {
        "severity": mine.severity,
        "environment": mine.environment,
        "requested_by": decision.approvers[0] if decision.approvers else mine.requested_by,
        "trigger": "handoff",
        "started_by": workflow.info().workflow_id,
    }


async def hand_off(
    run: GatedRunbook, procedure: str, target: type, inp: RunbookInput, resource: str | None
) -> HandoffResult:
    """Start `procedure` (workflow class `target`, input `inp` made with handoff_fields) under
    its usual id for `resource` (None: the environment is the resource), and link the runs."""
    defn = getattr(target, "__temporal_workflow_definition")
    result: HandoffResult = await run.step(
        f"start {procedure}",
        workflow.execute_activity_method(
            HandoffActivities.start,
            HandoffRequest(
                procedure=procedure,
                workflow_type=str(defn.name),
                workflow_id=workflow_id(procedure, inp.environment, resource),
                input=inp.model_dump(mode="json"),
                authority=run.authority(),
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=MUTATE_RETRY,
        ),
        lambda r: (
            f"{r.workflow_id} (run {r.run_id})"
            + ("" if r.started else ": already running; linked, not started twice")
        ),
    )
    run.link_started(result.workflow_id)
    return result
