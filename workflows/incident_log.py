"""Every run of every procedure ends in the incident log, whatever its outcome, and no run
ends while one of its signal or Update handlers is still at work.

A worker interceptor, so procedures need no code for it: after the run returns or fails,
the run's record is written by an activity. When the runbook database is down the
remediation is already done; the record waits for the database on its own retry schedule
and the timeline says so.
"""

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

with workflow.unsafe.imports_passed_through():
    from activities.incidents import IncidentActivities, RecordResult

from workflows.base import RunbookWorkflow, failure_message

FIRST_TRY = RetryPolicy(maximum_attempts=1)
# After the first failure: until the database is back, for up to a week.
UNTIL_BACK = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2,
    maximum_interval=timedelta(minutes=5),
)


async def _write(
    run: RunbookWorkflow, error: BaseException | None, retry: RetryPolicy
) -> RecordResult:
    return await workflow.execute_activity_method(
        IncidentActivities.record,
        run.incident_record(error),
        start_to_close_timeout=timedelta(seconds=30),
        schedule_to_close_timeout=timedelta(days=7),
        retry_policy=retry,
    )


async def record_incident(run: RunbookWorkflow, error: BaseException | None) -> None:
    try:
        result = await _write(run, error, FIRST_TRY)
    except ActivityError as err:
        run.record(
            "incident log",
            "failed",
            f"not written: {failure_message(err)}; retrying until it is back",
        )
        result = await _write(run, error, UNTIL_BACK)
    if not result.recorded:
        run.record("incident log", "skipped", "RUNBOOK_DATABASE_URL is not configured")
        return
    where = f"; post-mortem draft: {result.postmortem}" if result.postmortem else ""
    run.record("incident log", "ok", f"incident {result.incident_id} recorded{where}")
    if result.postmortem:
        await run.notify(
            "info",
            f"{run.procedure}: post-mortem draft for {result.incident_id}",
            f"`runbook postmortem {result.incident_id}` renders the draft from the incident "
            "log (`--out FILE` exports it for editing).",
            {},
        )


class _RecordIncident(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        # A handler still at work (an approval whose signature is being verified) ends
        # before the run does: its caller gets an answer, not "workflow completed". Not in
        # a `finally`: that would also run when the worker evicts the run from its cache.
        try:
            result = await self._execute_and_record(input)
        except (Exception, workflow.ContinueAsNewError):
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _execute_and_record(self, input: ExecuteWorkflowInput) -> Any:
        run = workflow.instance()
        # Not isinstance: inside the workflow sandbox the procedure's classes are the
        # sandbox's own re-imports, not the ones this interceptor module sees.
        if not hasattr(run, "incident_record"):
            return await super().execute_workflow(input)
        try:
            result = await super().execute_workflow(input)
        except Exception as err:  # a failed run is an incident too; continue-as-new is not
            await record_incident(run, err)
            raise
        await record_incident(run, None)
        return result


class IncidentLogInterceptor(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _RecordIncident
