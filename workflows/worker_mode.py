"""The worker's own rules for every run, whatever its input says (a worker interceptor):

- a run for another environment than the worker's is refused before it does anything (its
  input names resources of that environment, and this worker holds another account's roles);
- in shadow mode (RUNBOOK_READ_ONLY=1) every run is a dry run: diagnosis and plan, no gate,
  no action. The AWS mutations refuse too (activities/aws_access.py).

The worker's answer comes from a local activity, so it is in the history: a run keeps the
mode it started with when another worker replays it. Runs recorded before this existed take
neither check (`workflow.patched`).
"""

from datetime import timedelta
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

with workflow.unsafe.imports_passed_through():
    from activities.worker_mode import WorkerMode, WorkerModeActivities, WorkerModeRequest

PATCH = "worker-mode"


class _WorkerMode(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        inp = input.args[0] if input.args else None
        if isinstance(inp, BaseModel) and hasattr(inp, "environment") and workflow.patched(PATCH):
            mode: WorkerMode = await workflow.execute_local_activity_method(
                WorkerModeActivities.mode,
                WorkerModeRequest(environment=inp.environment),
                start_to_close_timeout=timedelta(seconds=10),
            )
            if mode.environment != inp.environment:
                raise ApplicationError(
                    f"environment: this run is for {inp.environment!r}, but the workers of task "
                    f"queue {workflow.info().task_queue!r} serve {mode.environment!r}; start it "
                    f"with --env {inp.environment} (its own task queue)",
                    type="WrongEnvironment",
                    non_retryable=True,
                )
            if mode.read_only and getattr(inp, "dry_run", True) is False:
                input.args = [inp.model_copy(update={"dry_run": True}), *input.args[1:]]
                run = workflow.instance()
                if hasattr(run, "record"):
                    run.record(
                        "shadow mode",
                        "info",
                        "RUNBOOK_READ_ONLY: a dry run, whatever the input says",
                    )
        return await super().execute_workflow(input)


class WorkerModeInterceptor(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _WorkerMode
