"""A run started with no input, or with `null` (the Temporal UI's empty input box, a script),
fails at once with a message saying what to send. Without this, the run's workflow task
fails on a TypeError and is retried for ever: a run that hangs without saying why."""

import inspect
from typing import Any

from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

MISSING = "input: a JSON object is required, e.g. {{}} for the runbook's defaults; got {what}"


class _RequireInput(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        if _needs_input(input) and (not input.args or input.args[0] is None):
            what = "no input" if not input.args else "null"
            raise ApplicationError(
                MISSING.format(what=what), type="ValidationError", non_retryable=True
            )
        return await super().execute_workflow(input)


def _needs_input(input: ExecuteWorkflowInput) -> bool:
    """Does the run method take an input it cannot go without?"""
    params = list(inspect.signature(input.run_fn).parameters.values())
    return bool(params) and params[-1].default is inspect.Parameter.empty


class InputGuardInterceptor(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _RequireInput
