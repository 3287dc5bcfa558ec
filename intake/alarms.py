"""From a verified alarm to a runbook: route, resource, input, then start once or record."""

import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ValidationError

from activities.alarms import AlarmOutcome, AlarmRecord, AlarmStart, AlarmStarter
from intake.routes import AlarmRoute, find_resource
from settings import EnvironmentProfile
from workflows import registry
from workflows.models import AlarmDelivery

RESOURCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
MAX_REASON = 300

# Anything in an alarm that looks like a credential never reaches a workflow.
_SECRETS = (
    (re.compile(r"(?i)\bbearer\s+\S+"), "Bearer [redacted]"),
    (
        re.compile(
            r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|authorization|credentials?"
            r"|access[_-]?key|private[_-]?key)\b(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
        ),
        r"\1\2[redacted]",
    ),
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), "[redacted]"),
    (
        re.compile(r"(?i)\b(https?|postgres(?:ql)?|redis|amqp)://[^/\s:@]+:[^/\s@]+@"),
        r"\1://[redacted]@",
    ),
    (re.compile(r"[A-Za-z0-9+/_=-]{40,}"), "[redacted]"),
)


class Rejected(Exception):
    """A delivery refused with a 4xx (or 503) that says why; nothing was started."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Alarm(BaseModel):
    """One alarm notification, whatever delivered it."""

    source: Literal["cloudwatch", "alertmanager"]
    name: str
    state: Literal["ALARM", "OK"]
    # CloudWatch dimensions or Alertmanager labels.
    labels: dict[str, str] = {}
    reason: str = ""
    # When the alarm entered this state (StateChangeTime, startsAt).
    since: datetime
    # Where it fired (CloudWatch: the alarm's ARN; Alertmanager: labels), and the
    # environment when a label names it: the alarm is routed to that environment.
    account: str | None = None
    region: str | None = None
    environment: str | None = None


class Planned(BaseModel):
    alarm: Alarm
    procedure: str
    severity: str
    environment: str
    task_queue: str
    workflow_id: str
    workflow_type: str
    input: dict[str, object]


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text[:MAX_REASON]


def shown(name: str) -> str:
    return repr(name[:80])


def _fits(configured: str | None, given: str | None) -> bool:
    return configured is None or given is None or configured == given


def describe(profile: EnvironmentProfile) -> str:
    where = "/".join(p for p in (profile.aws_account_id, profile.aws_region) if p)
    return f"{profile.name} ({where})" if where else profile.name


class Intake:
    def __init__(
        self,
        starter: AlarmStarter,
        routes: dict[str, AlarmRoute],
        environments: dict[str, EnvironmentProfile],
    ) -> None:
        self._starter = starter
        self._routes = routes
        self._environments = environments

    def environment(self, alarm: Alarm) -> EnvironmentProfile:
        """The environment whose account and region the alarm comes from; refused when none
        or several match (an alarm never acts on a guessed account)."""
        known = ", ".join(describe(p) for p in self._environments.values())
        if alarm.environment is not None:
            if alarm.environment not in self._environments:
                raise Rejected(
                    422,
                    f"alarm {shown(alarm.name)}: environment {shown(alarm.environment)} is not "
                    f"known; known: {known}",
                )
            return self._environments[alarm.environment]
        matching = [
            p
            for p in self._environments.values()
            if _fits(p.aws_account_id, alarm.account) and _fits(p.aws_region, alarm.region)
        ]
        if len(matching) == 1:
            return matching[0]
        origin = f"account {alarm.account or '?'}, region {alarm.region or '?'}"
        if not matching:
            raise Rejected(
                422, f"alarm {shown(alarm.name)}: {origin} is no known environment; known: {known}"
            )
        raise Rejected(
            422,
            f"alarm {shown(alarm.name)}: {origin} matches several environments "
            f"({', '.join(p.name for p in matching)}): give each environment its aws_account_id "
            "and aws_region, or label the alert with `environment`",
        )

    def plan(self, alarm: Alarm) -> Planned:
        """Everything checked before anything is started; Rejected says what is wrong."""
        route = self._routes.get(alarm.name)
        if route is None:
            known = ", ".join(sorted(self._routes))
            raise Rejected(422, f"unknown alarm {shown(alarm.name)}: no route; known: {known}")
        procedure = registry.PROCEDURES.get(route.procedure)
        if procedure is None:
            raise Rejected(
                422,
                f"procedure not installed: {route.procedure!r} (the route of alarm "
                f"{shown(alarm.name)}) is not in this deployment's registry",
            )
        profile = self.environment(alarm)
        model_fields = procedure.input_model.model_fields
        values: dict[str, object] = {
            k: v for k, v in profile.input_defaults(procedure.name).items() if k in model_fields
        }
        values.update(
            severity=route.severity,
            trigger="alarm",
            requested_by=f"alarm:{alarm.name}"[:100],
            environment=profile.name,
        )
        resource = find_resource(route, alarm.labels)
        if resource is not None:
            if not RESOURCE.fullmatch(resource):
                raise Rejected(
                    422, f"alarm {shown(alarm.name)}: resource {shown(resource)} is not a name"
                )
            values[procedure.resource_field] = resource
        try:
            inp = procedure.input_model.model_validate(values)
        except ValidationError as err:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise Rejected(422, f"alarm {shown(alarm.name)}: {detail}") from None
        return Planned(
            alarm=alarm,
            procedure=procedure.name,
            severity=route.severity,
            environment=profile.name,
            task_queue=profile.task_queue,
            workflow_id=procedure.workflow_id(inp),
            workflow_type=procedure.workflow_type,
            input=inp.model_dump(mode="json"),
        )

    async def deliver(self, planned: Planned) -> AlarmOutcome:
        alarm = planned.alarm
        delivery = AlarmDelivery(
            source=alarm.source,
            alarm=alarm.name,
            state=alarm.state,
            received_at=datetime.now(UTC),
            reason=redact(alarm.reason),
        ).model_dump(mode="json")
        if alarm.state == "OK":  # recorded on the running workflow, never starts one
            return await self._starter.record(
                AlarmRecord(workflow_id=planned.workflow_id, delivery=delivery)
            )
        return await self._starter.start_once(
            AlarmStart(
                workflow_type=planned.workflow_type,
                workflow_id=planned.workflow_id,
                task_queue=planned.task_queue,
                input=planned.input,
                delivery=delivery,
                episode_started_at=alarm.since,
            )
        )
