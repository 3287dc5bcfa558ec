"""Temporal Schedules of the runbooks (`runbook schedules` shows and changes them).

`apply` creates what is missing and updates what exists to these definitions, keeping a
schedule's paused state and note: running it twice changes nothing. Each environment has its
own schedules (id `<name>/<environment>`), on its task queue, starting its runbooks.
"""

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleDescription,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

import workflows
from client.errors import BadInput
from settings import EnvironmentProfile
from workflows.llm_spend_watch import LlmSpendWatchInput


@dataclass(frozen=True)
class ScheduleDef:
    name: str  # with the environment, the schedule id; each run's id adds the time
    workflow_type: str
    summary: str
    spec: ScheduleSpec
    catchup: timedelta
    make_input: Callable[[str], Any]  # the environment -> the workflow's input


def _schedule_input(name: str, environment: str) -> dict[str, str]:
    return {"trigger": "schedule", "requested_by": f"schedule:{name}", "environment": environment}


def schedule_id(definition: ScheduleDef, environment: str) -> str:
    return f"{definition.name}/{environment}"


SCHEDULES: tuple[ScheduleDef, ...] = (
    ScheduleDef(
        name="cert-expiry-check",
        # Written with cert renewal (runbook.md 7): certificates within 30 days of expiry.
        workflow_type="CertExpiryCheck",
        summary="daily at 06:00 UTC: certificates within 30 days of expiry",
        spec=ScheduleSpec(
            calendars=[ScheduleCalendarSpec(hour=[ScheduleRange(6)], minute=[ScheduleRange(0)])]
        ),
        catchup=timedelta(hours=12),
        make_input=lambda env: _schedule_input("cert-expiry-check", env),
    ),
    ScheduleDef(
        name="llm-spend-watch",
        workflow_type="LlmSpendWatch",
        summary="every 5 minutes: start llm-budget when spend reaches 90% of the budget",
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(minutes=5))]),
        # A missed reading is stale: do not make up for downtime with a burst of them.
        catchup=timedelta(minutes=5),
        make_input=lambda env: LlmSpendWatchInput(environment=env),
    ),
)
BY_NAME = {d.name: d for d in SCHEDULES}


class ScheduleRow(BaseModel):
    name: str
    environment: str
    applied: bool
    workflow_type: str
    summary: str
    paused: bool = False
    note: str = ""
    next_run: datetime | None = None
    last_run: datetime | None = None
    runs: int = 0


def build(definition: ScheduleDef, profile: EnvironmentProfile, state: ScheduleState) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            definition.workflow_type,
            definition.make_input(profile.name),
            id=schedule_id(definition, profile.name),
            task_queue=profile.task_queue,
            static_summary=definition.summary,
        ),
        spec=definition.spec,
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy.SKIP, catchup_window=definition.catchup
        ),
        state=state,
    )


# The note of a schedule paused because its workflow is not in this deployment yet.
WAITING = "paused until its workflow type is deployed: "


def deployed_workflow_types() -> set[str]:
    """Workflow type names defined in the `workflows` package (what the worker can run)."""
    names = set()
    for module in pkgutil.iter_modules(workflows.__path__, "workflows."):
        for value in vars(importlib.import_module(module.name)).values():
            defn = getattr(value, "__temporal_workflow_definition", None)
            if defn is not None and defn.name:
                names.add(str(defn.name))
    return names


def initial_state(definition: ScheduleDef, deployed: set[str]) -> ScheduleState:
    if definition.workflow_type in deployed:
        return ScheduleState(note=definition.summary)
    return ScheduleState(paused=True, note=WAITING + definition.workflow_type)


def next_state(
    current: ScheduleState, definition: ScheduleDef, deployed: set[str]
) -> ScheduleState:
    """Keep a person's pause and note; lift our own pause once the workflow is deployed."""
    if (current.note or "").startswith(WAITING):
        return initial_state(definition, deployed)
    return replace(current)


async def apply(client: Client, profile: EnvironmentProfile) -> dict[str, str]:
    """Create or update every schedule of the environment; `{name: "created" | "updated"}`."""
    deployed = deployed_workflow_types()
    done: dict[str, str] = {}
    for definition in SCHEDULES:
        schedule = build(definition, profile, initial_state(definition, deployed))
        sid = schedule_id(definition, profile.name)
        try:
            await client.create_schedule(sid, schedule)
            done[definition.name] = "created"
        except ScheduleAlreadyRunningError:

            def keep_state(
                current: ScheduleUpdateInput, d: ScheduleDef = definition
            ) -> ScheduleUpdate:
                state = next_state(current.description.schedule.state, d, deployed)
                return ScheduleUpdate(schedule=build(d, profile, state))

            await client.get_schedule_handle(sid).update(keep_state)
            done[definition.name] = "updated"
    return done


async def describe(
    client: Client, definition: ScheduleDef, environment: str
) -> ScheduleDescription | None:
    try:
        return await client.get_schedule_handle(schedule_id(definition, environment)).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def rows(client: Client, environment: str) -> list[ScheduleRow]:
    found = []
    for definition in SCHEDULES:
        row = ScheduleRow(
            name=definition.name,
            environment=environment,
            applied=False,
            workflow_type=definition.workflow_type,
            summary=definition.summary,
        )
        desc = await describe(client, definition, environment)
        if desc is not None:
            info, state = desc.info, desc.schedule.state
            row.applied, row.paused, row.note = True, state.paused, state.note or ""
            row.next_run = info.next_action_times[0] if info.next_action_times else None
            row.last_run = info.recent_actions[-1].started_at if info.recent_actions else None
            row.runs = info.num_actions
        found.append(row)
    return found


async def set_paused(client: Client, name: str, environment: str, paused: bool, note: str) -> None:
    definition = BY_NAME.get(name)
    if definition is None:
        raise BadInput(f"NAME: no schedule {name!r}; schedules: {', '.join(BY_NAME)}")
    if await describe(client, definition, environment) is None:
        raise BadInput(f"{name}: not applied in {environment} yet; run `runbook schedules apply`")
    handle = client.get_schedule_handle(schedule_id(definition, environment))
    if paused:
        await handle.pause(note=note)
    else:
        await handle.unpause(note=note)
