"""The LLM spend watch (schedule `llm-spend-watch`, every few minutes): read-only.

When today's spend reaches the threshold (default 90%) of the daily budget, it starts the
llm-budget runbook, if that procedure is installed, exactly as an alarm would: one run per
resource, every further reading recorded on it by the `alarm` signal. The UTC day is the
alarm's episode: once a run for today has ended, the watch does not start another today (a
person can still start one with `runbook start llm-budget`).
"""

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.alarms import AlarmActivities, AlarmOutcome, AlarmStart
    from activities.spend import SpendActivities, SpendReading, SpendReadRequest

from workflows import registry
from workflows.base import READ_RETRY
from workflows.models import ENVIRONMENT_PATTERN, AlarmDelivery, Severity

ALARM = "llm-spend-watch"

Action = Literal[
    "below",
    "no_budget",
    "not_installed",
    "started",
    "signalled",
    "suppressed",
    "not_running",
    "coalesced",
]


class LlmSpendWatchInput(BaseModel):
    threshold: float = Field(default=0.9, gt=0, le=2)
    procedure: str = Field("llm-budget", max_length=64)
    # The environment the started runbook acts in (the schedule's own).
    environment: str = Field("production", pattern=ENVIRONMENT_PATTERN)


class LlmSpendWatchResult(BaseModel):
    date: str
    spend: float
    budget: float | None
    budget_source: str
    ratio: float | None = None
    action: Action
    workflow_id: str | None = None
    detail: str = ""


def severity_for(ratio: float) -> Severity:
    """Spent: email generation has stopped (P1); close to it: P2."""
    return "P1" if ratio >= 1 else "P2"


@workflow.defn(name="LlmSpendWatch")
class LlmSpendWatch:
    @workflow.run
    async def run(self, inp: LlmSpendWatchInput) -> LlmSpendWatchResult:
        now = workflow.now()
        reading: SpendReading = await workflow.execute_activity_method(
            SpendActivities.read,
            SpendReadRequest(date=now.strftime("%Y-%m-%d")),
            start_to_close_timeout=timedelta(seconds=20),
            retry_policy=READ_RETRY,
        )
        result = LlmSpendWatchResult(
            date=reading.date,
            spend=reading.spend,
            budget=reading.budget,
            budget_source=reading.budget_source,
            action="no_budget",
            detail=reading.detail,
        )
        if reading.budget is None:
            return result
        result.ratio = round(reading.spend / reading.budget, 4)
        if result.ratio < inp.threshold:
            result.action = "below"
            return result
        return await self._start(inp, reading, result)

    async def _start(
        self, inp: LlmSpendWatchInput, reading: SpendReading, result: LlmSpendWatchResult
    ) -> LlmSpendWatchResult:
        procedure = registry.PROCEDURES.get(inp.procedure)
        ratio = result.ratio or 0.0
        summary = (
            f"spend ${reading.spend:.2f} of ${reading.budget:.2f} ({ratio:.0%}) on {reading.date}"
        )
        if procedure is None:
            workflow.logger.warning("%s: %s is not installed", summary, inp.procedure)
            result.action, result.detail = "not_installed", f"{inp.procedure} is not installed"
            return result
        target = procedure.input_model.model_validate(
            {
                "severity": severity_for(ratio),
                "environment": inp.environment,
                "trigger": "schedule",
                "requested_by": f"schedule:{ALARM}",
            }
        )
        delivery = AlarmDelivery(
            source="schedule", alarm=ALARM, received_at=workflow.now(), reason=summary
        )
        day = datetime.strptime(reading.date, "%Y-%m-%d").replace(tzinfo=UTC)
        outcome: AlarmOutcome = await workflow.execute_activity_method(
            AlarmActivities.start_once,
            AlarmStart(
                workflow_type=procedure.workflow_type,
                workflow_id=procedure.workflow_id(target),
                task_queue=workflow.info().task_queue,
                input=target.model_dump(mode="json"),
                delivery=delivery.model_dump(mode="json"),
                episode_started_at=day,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=READ_RETRY,
        )
        result.action, result.workflow_id = outcome.action, outcome.workflow_id
        result.detail = outcome.detail or summary
        return result
