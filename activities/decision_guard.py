"""The second check of a decision, where the action happens: a worker interceptor that runs a
guarded activity (`GUARDED_ACTIVITIES`) only when the approvals in its request were signed
for the run the activity belongs to (`activity.info().workflow_run_id`).

Why in the worker and not in workflow code: a reset run replays the recorded verdict of
`approvals.verify`, so workflow code sees an approved gate; and a reset dispatches a mutation
that was in flight again, under the new run's id, without any workflow code running first.
Both reach this check, which refuses them before they reach AWS.
"""

from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities.approvals import GUARDED_ACTIVITIES, authority_refusal, load_roster, load_table


class DecisionGuard(Interceptor):
    """Built by the worker with the roster and keys files (read on every call, like
    `approvals.verify`: a revoked key stops the actions it approved that have not run)."""

    def __init__(
        self, roster_file: Path | None, keys_file: Path | None, intake_key: str | None = None
    ) -> None:
        self._roster_file = roster_file
        self._keys_file = keys_file
        self._intake_key = intake_key  # checks approvals clicked in Slack

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Guard(next, self)

    def refusal(self, activity_type: str, args: Any) -> str | None:
        if activity_type not in GUARDED_ACTIVITIES:
            return None
        info = activity.info()
        authority = getattr(args[0], "authority", None) if args else None
        return authority_refusal(
            authority,
            info.workflow_id or "",
            info.workflow_run_id or "",
            load_roster(self._roster_file),
            load_table(self._keys_file, "keys"),
            self._intake_key,
        )


class _Guard(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, guard: DecisionGuard) -> None:
        super().__init__(next)
        self._guard = guard

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        refusal = self._guard.refusal(activity.info().activity_type, input.args)
        if refusal:
            raise ApplicationError(refusal, type="NotApprovedForThisRun", non_retryable=True)
        return await super().execute_activity(input)
