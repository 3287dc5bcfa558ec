"""Start inputs a run must refuse before it does anything (records, notifies or acts):

- no input, or `null` (the Temporal UI's empty input box, a script): without this check the
  run's workflow task fails on a TypeError and is retried for ever, a run that hangs without
  saying why;
- a workflow id that does not name the resource (`workflows/ids.py`): a second id for the
  same database would be a second run acting on it;
- state that only the workflow's own continue-as-new may carry over (an input model's
  `CARRIED_OVER` fields) in a run that was not continued: it would skip the gate.
"""

import inspect
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from workflows.ids import id_refusal
from workflows.registry import PROCEDURES

MISSING = "input: a JSON object is required, e.g. {{}} for the runbook's defaults; got {what}"
BY_TYPE = {p.workflow_type: p for p in PROCEDURES.values()}


class _GuardInput(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        if _needs_input(input) and (not input.args or input.args[0] is None):
            what = "no input" if not input.args else "null"
            raise ApplicationError(
                MISSING.format(what=what), type="ValidationError", non_retryable=True
            )
        if input.args and isinstance(input.args[0], BaseModel):
            refusal = _carried_over(input.args[0]) or _foreign_id(input.args[0])
            if refusal:
                raise ApplicationError(refusal, type="ValidationError", non_retryable=True)
        return await super().execute_workflow(input)


def _needs_input(input: ExecuteWorkflowInput) -> bool:
    """Does the run method take an input it cannot go without?"""
    params = list(inspect.signature(input.run_fn).parameters.values())
    return bool(params) and params[-1].default is inspect.Parameter.empty


def _carried_over(inp: BaseModel) -> str | None:
    if workflow.info().continued_run_id is not None:
        return None
    for name in getattr(type(inp), "CARRIED_OVER", ()):
        if getattr(inp, name) is not None:
            return (
                f"{name}: set only by the run itself when it continues as new; "
                "a start must leave it empty"
            )
    return None


def _foreign_id(inp: BaseModel) -> str | None:
    info = workflow.info()
    procedure = BY_TYPE.get(info.workflow_type)
    # Runs recorded before the id was checked replay as they ran (their ids were free).
    if procedure is None or not workflow.patched("workflow-id-names-resource"):
        return None
    return id_refusal(
        procedure.name, procedure.environment(inp), procedure.id_resource(inp), info.workflow_id
    )


class InputGuardInterceptor(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _GuardInput
