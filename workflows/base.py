"""What every procedure shares: the timeline, steps and checks, notifications, the end.

A procedure subclasses `RunbookWorkflow` (or `GatedRunbook` of workflows/gate.py when it
asks a human before it acts), adds `@workflow.defn` and a `@workflow.run` that calls
`self.begin(...)`, then `self.check`, `self.step`, `self.notify` and `self.finish`.
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.incidents import GateSla, IncidentRecord, IncidentStep
    from activities.notify import MessageUpdate, Notification, NotifyActivities

from workflows import metrics
from workflows import search_attributes as sa
from workflows.models import (
    AlarmDelivery,
    Finding,
    GateResult,
    Outcome,
    PendingGate,
    Refusals,
    RunbookInput,
    RunbookResult,
    RunbookStatus,
    Severity,
    Step,
)
from workflows.slack_message import SlackMessage

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

# Retry policies say how often and for how long, never which errors: whether an error is
# worth retrying is said once, where it is raised. An activity raises a typed
# ApplicationError with non_retryable=True for bad input and for a refusal that no retry
# will change (no such cluster, not Multi-AZ, a rollout that failed); anything else is
# transient and retried.
# Read-only checks: short, retried a little; a check that still fails is "unavailable".
READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=4)
# Mutations are idempotent: a retry after a lost answer finds the change made and says so.
MUTATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
# Mutating activities heartbeat while they run (activities/keepalive.py): an attempt lost
# with its worker is retried after this long, not after its whole start-to-close timeout.
MUTATION_HEARTBEAT = timedelta(seconds=10)
# The timeline line that counts what the run refused (decisions, alarm deliveries).
REFUSED = "refused"
# Distinct alarms with a timeline line of their own; more are counted on one shared line.
MAX_ALARM_LINES = 10
OTHER_ALARMS = "(other alarms)"
# Notifications that end a run: its Slack app message takes their mark.
ENDINGS = ("resolved", "failed", "rejected")
MAX_DIAGNOSED = 20


def failure_message(err: BaseException) -> str:
    """The innermost cause of an activity failure, which is what a person needs to read."""
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    return str(err) or type(err).__name__


def problems(err: BaseException) -> str:
    """Which fields of a payload are wrong, and how."""
    while not isinstance(err, ValidationError) and err.__cause__ is not None:
        err = err.__cause__
    if not isinstance(err, ValidationError):
        return str(err) or type(err).__name__
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in err.errors()
    )


def describe_finding(finding: Finding) -> str:
    return f"{finding.verdict}: {finding.summary}"


class RunbookWorkflow:
    procedure = "runbook"
    # Whether the procedure may change anything (GatedRunbook); for the incident log's kind.
    acts = False

    def __init__(self) -> None:
        self._timeline: list[Step] = []
        self._phase = "starting"
        self._pending: PendingGate | None = None
        self._decision: GateResult | None = None
        self._outcome: Outcome | None = None
        self._resource = ""
        self._input = RunbookInput()
        self._alarms: dict[tuple[str, str], int] = {}
        self._refused = Refusals()
        # Whether the worker proved who started the run (workflows/gate.py); None: not asked.
        self._requester_proven: bool | None = None
        # For the incident log: who approved across every gate, and when the first did
        # (workflows/gate.py fills these; a run without a gate reports none).
        self._approvers: list[str] = []
        self._first_approval_at: datetime | None = None
        self._approved_at: datetime | None = None  # until the action's first step (metrics)
        self._findings: list[Finding] = []
        self._plan: list[str] = []
        self._summary = ""
        self._diagnosed: list[Finding] = []  # every check's finding, for the approval message
        self._slack = SlackMessage()
        # Runs this one started (hand-offs: workflows/handoffs.py), by workflow id.
        self._started: list[str] = []
        # For the incident log: each gate against its SLA, and the ticket a P3 run opened.
        self._gate_slas: list[GateSla] = []
        self._ticket: str | None = None

    # ---- state --------------------------------------------------------------------------

    def begin(self, inp: RunbookInput, resource: str) -> None:
        self._input = inp
        self._resource = resource
        self.set_phase("diagnose")
        metrics.run_started(self.procedure)
        self.record("started", "info", f"by {inp.requested_by} via {inp.trigger}, {inp.severity}")
        if inp.started_by:
            self.record("started by", "info", f"hand-off from {inp.started_by}")

    def link_started(self, workflow_id: str) -> None:
        """A run this one started (or found running) for a hand-off: in the incident log."""
        self._started.append(workflow_id)

    def set_phase(self, phase: str) -> None:
        self._phase = phase
        self._slack.phase(phase)

    def record(self, name: str, outcome: Any, detail: str = "") -> Step:
        now = workflow.now()
        step = Step(name=name, started_at=now, ended_at=now, outcome=outcome, detail=detail)
        self._timeline.append(step)
        return step

    def refuse(self, text: str) -> None:
        """A refused decision or alarm delivery: counted, the last few kept (the status's
        `refused`), and one timeline line however many: a flood of refusals cannot grow the
        run's state, its status or its incident record."""
        cut = self._refused.add(text)
        detail = f"{self._refused.count} refused; last: {cut}"
        step = next((s for s in self._timeline if s.name == REFUSED), None)
        if step is None:
            self.record(REFUSED, "refused", detail)
        else:
            step.detail, step.ended_at = detail, workflow.now()

    def decode(self, raw: RawValue, model: type[M], what: str) -> M | None:
        """A signal's payload as `model`; a malformed or oversized one is refused, naming the
        field, instead of being dropped by the SDK with only a log line."""
        try:
            value = workflow.payload_converter().from_payload(raw.payload, model)
        except Exception as err:  # not JSON, or not the model
            self.refuse(f"malformed {what} signal: {problems(err)}")
            return None
        return value if isinstance(value, model) else None

    @workflow.query(name="status")
    def status(self) -> RunbookStatus:
        return RunbookStatus(
            workflow_id=workflow.info().workflow_id,
            procedure=self.procedure,
            resource=self._resource,
            severity=self._input.severity,
            phase=self._phase,
            pending_gate=self._pending,
            timeline=self._timeline,
            outcome=self._outcome,
            refused=self._refused,
        )

    def finish(
        self, outcome: Outcome, summary: str, findings: list[Finding], plan: list[str]
    ) -> RunbookResult:
        self._outcome, self._summary = outcome, summary
        self._findings, self._plan = findings, plan
        self.set_phase("done")
        metrics.run_finished(self.procedure, outcome)
        self.record("finished", "ok" if outcome in ("completed", "dry_run") else "info", summary)
        return RunbookResult(
            workflow_id=workflow.info().workflow_id,
            procedure=self.procedure,
            resource=self._resource,
            severity=self._input.severity,
            outcome=outcome,
            summary=summary,
            findings=findings,
            plan=plan,
            decision=self._decision,
            timeline=self._timeline,
        )

    async def fail(self, summary: str, reason: str, escalate: str = "") -> NoReturn:
        """The end of a run whose action failed: notify (and whom to escalate to), then fail."""
        self._outcome = "failed"
        self.set_phase("failed")
        metrics.run_finished(self.procedure, "failed")
        text = f"{summary}: {reason}" + (f". {escalate}" if escalate else "")
        await self.notify("failed", f"{self.procedure} FAILED for {self._resource}", text, {})
        raise ApplicationError(
            f"{self.procedure} failed: {reason}", type="RunbookFailed", non_retryable=True
        )

    def incident_record(self, error: BaseException | None) -> IncidentRecord:
        """What the incident log keeps of this run (see workflows/incident_log.py)."""
        info, inp = workflow.info(), self._input
        outcome = self._outcome or ("failed" if error else "completed")
        ended = workflow.now()
        kind = "read_only" if not self.acts else "recommend_only"
        if any(gate.approved for gate in self._gate_slas):
            kind = "approved"
        mitigated = outcome == "completed" and kind == "approved"
        return IncidentRecord(
            incident_id=info.run_id,
            workflow_id=info.workflow_id,
            procedure=self.procedure,
            severity=inp.severity,
            trigger=inp.trigger,
            resource=self._resource,
            requested_by=inp.requested_by,
            requester_proven=self._requester_proven,
            started_by=inp.started_by,
            started=self._started,
            started_at=info.start_time,
            ended_at=ended,
            first_approval_at=self._first_approval_at,
            mitigated_at=ended if mitigated else None,
            outcome=outcome,
            summary=self._summary or (failure_message(error) if error else ""),
            approvers=self._approvers,
            refusals=self._refusal_lines(),
            findings=[f.model_dump(mode="json") for f in self._findings],
            plan=self._plan,
            timeline=[IncidentStep.model_validate(s.model_dump()) for s in self._timeline],
            kind=kind,
            gates=self._gate_slas,
            ticket=self._ticket,
        )

    def _refusal_lines(self) -> list[str]:
        refused = self._refused
        earlier = refused.count - len(refused.last)
        return ([f"{earlier} earlier refusals not kept"] if earlier else []) + refused.last

    # ---- steps and checks ---------------------------------------------------------------

    async def step(
        self, name: str, action: Awaitable[T], describe: Callable[[T], str] | None = None
    ) -> T:
        """Run one step and keep it in the timeline; a failure is recorded and re-raised."""
        step = Step(name=name, started_at=workflow.now())
        self._timeline.append(step)
        metrics.action_started(self.procedure, self._approved_at)
        self._approved_at = None
        try:
            result = await action
        except Exception as err:
            step.ended_at, step.outcome, step.detail = (
                workflow.now(),
                "failed",
                failure_message(err),
            )
            raise
        step.ended_at, step.outcome = workflow.now(), "ok"
        step.detail = describe(result) if describe else ""
        return result

    async def check(
        self, name: str, action: Awaitable[T], judge: Callable[[Any], Finding]
    ) -> tuple[Finding, T | None]:
        """A read-only diagnosis check: a failure becomes an 'unavailable' finding.
        (`judge` takes Any: mypy would solve T from the `T | None` of the result.)"""
        try:
            result = await self.step(name, action, lambda r: describe_finding(judge(r)))
        except ActivityError as err:
            finding = Finding(check=name, verdict="unavailable", summary=failure_message(err))
            return self._diagnosis(finding), None
        return self._diagnosis(judge(result)), result

    def _diagnosis(self, finding: Finding) -> Finding:
        if len(self._diagnosed) < MAX_DIAGNOSED:  # the first ones: the diagnosis's
            self._diagnosed.append(finding)
        return finding

    def key_findings(self) -> list[str]:
        """What the diagnosis found wrong first, then what it found fine."""
        ranked = sorted(self._diagnosed, key=lambda f: f.verdict == "ok")
        return [f"{f.check}: {describe_finding(f)}"[:300] for f in ranked[:6]]

    async def check_all(self, *checks: Awaitable[tuple[Finding, Any]]) -> list[tuple[Finding, Any]]:
        """Checks run in parallel: the diagnosis takes as long as its slowest check."""
        return list(await asyncio.gather(*checks))

    # ---- notifications ------------------------------------------------------------------

    async def notify(
        self,
        kind: Any,
        title: str,
        text: str,
        fields: dict[str, str],
        findings: list[str] | None = None,
    ) -> bool:
        """Send to Slack; a failed notification is recorded and never fails the runbook.
        With a Slack app message (workflows/slack_message.py) the run's later messages go in
        its thread, and the last one marks the message itself first."""
        note = Notification(
            kind=kind,
            title=title,
            severity=self._input.severity,
            text=text,
            fields=fields,
            findings=findings or [],
        )
        if self._slack.ref is not None and kind != "approval_request":
            note.thread, note.broadcast = self._slack.ref, kind == "escalation"
            if kind in ENDINGS:
                self._slack.ended(kind, title)
                await self._slack.settle()
        try:
            result = await workflow.execute_activity_method(
                NotifyActivities.slack,
                note,
                start_to_close_timeout=timedelta(seconds=15),
                retry_policy=NOTIFY_RETRY,
            )
        except ActivityError as err:
            self.record(f"notify {kind}", "failed", failure_message(err))
            metrics.notification_failed(self.procedure, "slack", kind)
            return False
        self.record(f"notify {kind}", "ok" if result.delivered else "skipped", result.detail)
        if kind == "approval_request":
            self._slack.posted(note, result, self._update_message)
        return result.delivered

    async def _update_message(self, update: MessageUpdate) -> None:
        """The Slack app message as the run is now; a failed update is recorded, never fatal."""
        try:
            await workflow.execute_activity_method(
                NotifyActivities.slack_update,
                update,
                start_to_close_timeout=timedelta(seconds=15),
                retry_policy=NOTIFY_RETRY,
            )
        except ActivityError as err:
            self.record("notify update", "failed", failure_message(err))
            metrics.notification_failed(self.procedure, "slack", "update")

    # ---- alarm deliveries -----------------------------------------------------------------

    @workflow.signal(name="alarm")
    def alarm_signal(self, raw: RawValue) -> None:
        """A storm of the same alarm lands here: one timeline line a delivery state, with
        the count and the last time, instead of a line per delivery; beyond MAX_ALARM_LINES
        distinct alarms, the rest share one line. (The intake sends a storm's repeats
        together: activities/alarms.py.)"""
        delivery = self.decode(raw, AlarmDelivery, "alarm")
        if delivery is None:
            return
        key = (delivery.alarm, delivery.state)
        if key not in self._alarms and len(self._alarms) >= MAX_ALARM_LINES:
            key = (OTHER_ALARMS, delivery.state)
        self._alarms[key] = self._alarms.get(key, 0) + delivery.count
        count = self._alarms[key]
        name = f"alarm {key[0]} {delivery.state}"
        detail = f"{count}x via {delivery.source}, last {delivery.received_at:%H:%M:%S}"
        if key[0] == OTHER_ALARMS:
            detail += f" ({delivery.alarm})"
        if delivery.reason:
            detail += f": {delivery.reason}"
        existing = next((s for s in reversed(self._timeline) if s.name == name), None)
        if existing:
            existing.detail, existing.ended_at = detail, workflow.now()
        else:
            self.record(name, "info", detail)

    # ---- search attributes --------------------------------------------------------------

    def tag(self, severity: Severity) -> None:
        workflow.upsert_search_attributes(
            [
                sa.PROCEDURE.value_set(self.procedure),
                sa.RESOURCE.value_set(self._resource),
                sa.SEVERITY.value_set(severity),
                sa.ENVIRONMENT.value_set(self._input.environment),
                sa.GATE.value_set("none"),
            ]
        )
