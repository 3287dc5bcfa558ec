"""What every procedure shares: the timeline, the approval gate and notifications.

A procedure subclasses `RunbookWorkflow`, adds `@workflow.defn` and a `@workflow.run` that
calls `self.begin(...)`, then `self.check`, `self.step`, `self.gate` and `self.notify`.
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.notify import Notification, NotifyActivities

from workflows import search_attributes as sa
from workflows.models import (
    AlarmDelivery,
    Approval,
    Decision,
    DecisionAck,
    Finding,
    GateResult,
    Outcome,
    ParamSpec,
    PendingGate,
    Rejection,
    RunbookInput,
    RunbookResult,
    RunbookStatus,
    Severity,
    Step,
)

T = TypeVar("T")

# Read-only checks: short, retried a little; a check that still fails is "unavailable".
READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=4)


def failure_message(err: BaseException) -> str:
    """The innermost cause of an activity failure, which is what a person needs to read."""
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    return str(err) or type(err).__name__


def describe_finding(finding: Finding) -> str:
    return f"{finding.verdict}: {finding.summary}"


class RunbookWorkflow:
    procedure = "runbook"

    def __init__(self) -> None:
        self._timeline: list[Step] = []
        self._phase = "starting"
        self._pending: PendingGate | None = None
        self._decision: GateResult | None = None
        self._outcome: Outcome | None = None
        self._resource = ""
        self._input = RunbookInput()
        self._alarms: dict[tuple[str, str], int] = {}

    # ---- state --------------------------------------------------------------------------

    def begin(self, inp: RunbookInput, resource: str) -> None:
        self._input = inp
        self._resource = resource
        self.set_phase("diagnose")
        self.record("started", "info", f"by {inp.requested_by} via {inp.trigger}, {inp.severity}")

    def set_phase(self, phase: str) -> None:
        self._phase = phase

    def record(self, name: str, outcome: Any, detail: str = "") -> Step:
        now = workflow.now()
        step = Step(name=name, started_at=now, ended_at=now, outcome=outcome, detail=detail)
        self._timeline.append(step)
        return step

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
        )

    def finish(
        self, outcome: Outcome, summary: str, findings: list[Finding], plan: list[str]
    ) -> RunbookResult:
        self._outcome = outcome
        self.set_phase("done")
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

    # ---- steps and checks ---------------------------------------------------------------

    async def step(
        self, name: str, action: Awaitable[T], describe: Callable[[T], str] | None = None
    ) -> T:
        """Run one step and keep it in the timeline; a failure is recorded and re-raised."""
        step = Step(name=name, started_at=workflow.now())
        self._timeline.append(step)
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
        self, name: str, action: Awaitable[T], judge: Callable[[T], Finding]
    ) -> tuple[Finding, T | None]:
        """A read-only diagnosis check: a failure becomes an 'unavailable' finding."""
        try:
            result = await self.step(name, action, lambda r: describe_finding(judge(r)))
        except ActivityError as err:
            return Finding(check=name, verdict="unavailable", summary=failure_message(err)), None
        return judge(result), result

    async def check_all(self, *checks: Awaitable[tuple[Finding, Any]]) -> list[tuple[Finding, Any]]:
        """Checks run in parallel: the diagnosis takes as long as its slowest check."""
        return list(await asyncio.gather(*checks))

    # ---- notifications ------------------------------------------------------------------

    async def notify(self, kind: Any, title: str, text: str, fields: dict[str, str]) -> bool:
        """Send to Slack; a failed notification is recorded and never fails the runbook."""
        note = Notification(
            kind=kind, title=title, severity=self._input.severity, text=text, fields=fields
        )
        try:
            result = await workflow.execute_activity_method(
                NotifyActivities.slack,
                note,
                start_to_close_timeout=timedelta(seconds=15),
                retry_policy=NOTIFY_RETRY,
            )
        except ActivityError as err:
            self.record(f"notify {kind}", "failed", failure_message(err))
            return False
        self.record(f"notify {kind}", "ok" if result.delivered else "skipped", result.detail)
        return result.delivered

    # ---- the approval gate --------------------------------------------------------------

    async def gate(
        self, gate: str, summary: str, plan: list[str], params: list[ParamSpec] | None = None
    ) -> GateResult:
        """Ask a human, wait for a decision until the severity's response time runs out.
        `params` are numbers the approver may give (checked against their bounds)."""
        inp = self._input
        now = workflow.now()
        timeout = inp.approval_timeout()
        self._decision = None
        self._pending = PendingGate(
            gate=gate,
            requested_at=now,
            expires_at=now + timeout,
            requested_by=inp.requested_by,
            severity=inp.severity,
            summary=summary,
            plan=plan,
            params=params or [],
        )
        self.set_phase("awaiting approval")
        workflow.upsert_search_attributes([sa.GATE.value_set("waiting")])
        self.record(f"gate {gate} opened", "info", f"waiting up to {timeout} for a decision")
        await self.notify(
            "approval_request",
            f"{self.procedure}: approval needed for {self._resource}",
            summary + "\n" + "\n".join(f"• {line}" for line in plan),
            {"Requested by": inp.requested_by, "Expires": self._pending.expires_at.isoformat()},
        )
        try:
            await workflow.wait_condition(lambda: self._decision is not None, timeout=timeout)
        except TimeoutError:
            self._decision = GateResult(approved=False, timed_out=True)
            self.record(f"gate {gate} timed out", "refused", f"no decision within {timeout}")
        self._pending = None
        workflow.upsert_search_attributes([sa.GATE.value_set("none")])
        assert self._decision is not None
        return self._decision

    def _refusal(self, decision: Decision) -> str | None:
        """Why this decision cannot be taken, or None when it can."""
        if self._pending is None:
            return f"no approval gate is open: the runbook is in phase {self._phase!r}"
        if not decision.approver.strip():
            return "approver: a name is required"
        if not decision.approve and not decision.comment.strip():
            return "reason: a rejection needs a reason"
        if (
            self._input.severity in ("P0", "P1")
            and decision.approver.strip() == self._input.requested_by
        ):
            return (
                f"approver: {decision.approver!r} requested this run; on {self._input.severity} "
                "a second person must decide"
            )
        return self._param_refusal(decision.params)

    def _param_refusal(self, given: dict[str, str]) -> str | None:
        assert self._pending is not None
        specs = {spec.name: spec for spec in self._pending.params}
        unknown = sorted(set(given) - set(specs))
        if unknown:
            allowed = ", ".join(specs) or "none"
            return f"params: {', '.join(unknown)} not asked for by this gate; allowed: {allowed}"
        for name, text in given.items():
            if refusal := specs[name].check(text):
                return refusal
        return None

    def _take(self, decision: Decision) -> DecisionAck:
        assert self._pending is not None
        who = decision.approver.strip()
        self._decision = GateResult(
            approved=decision.approve,
            decided_by=who,
            decided_at=workflow.now(),
            comment=decision.comment,
            params={
                **{spec.name: f"{spec.default:g}" for spec in self._pending.params},
                **decision.params,
            },
        )
        verb = "approved" if decision.approve else "rejected"
        self.record(f"gate {self._pending.gate} {verb}", "ok", f"by {who}: {decision.comment}")
        return DecisionAck(gate=self._pending.gate, approved=decision.approve, decided_by=who)

    # Approval arrives by Update (the caller hears at once whether it was taken) or by
    # signal (fire and forget: a refused one is recorded in the timeline).

    @workflow.update(name="approve")
    def approve(self, approval: Approval) -> DecisionAck:
        return self._decide(approval.as_decision())

    @approve.validator
    def _validate_approve(self, approval: Approval) -> None:
        self._validate(approval.as_decision())

    @workflow.update(name="reject")
    def reject(self, rejection: Rejection) -> DecisionAck:
        return self._decide(rejection.as_decision())

    @reject.validator
    def _validate_reject(self, rejection: Rejection) -> None:
        self._validate(rejection.as_decision())

    @workflow.signal(name="approve")
    def approve_signal(self, approval: Approval) -> None:
        self._decide_by_signal(approval.as_decision())

    @workflow.signal(name="reject")
    def reject_signal(self, rejection: Rejection) -> None:
        self._decide_by_signal(rejection.as_decision())

    def _validate(self, decision: Decision) -> None:
        refusal = self._refusal(decision)
        if refusal:
            raise ValueError(refusal)

    def _decide(self, decision: Decision) -> DecisionAck:
        refusal = self._refusal(decision)
        if refusal:  # two decisions in one workflow task: the second finds the gate closed
            raise ApplicationError(refusal, type="GateRefused", non_retryable=True)
        return self._take(decision)

    def _decide_by_signal(self, decision: Decision) -> None:
        refusal = self._refusal(decision)
        if refusal:
            self.record("decision refused", "refused", f"{decision.approver!r}: {refusal}")
            return
        self._take(decision)

    # ---- alarm deliveries -----------------------------------------------------------------

    @workflow.signal(name="alarm")
    def alarm_signal(self, delivery: AlarmDelivery) -> None:
        """A storm of the same alarm lands here: one timeline line a delivery state, with
        the count and the last time, instead of a line per delivery."""
        key = (delivery.alarm, delivery.state)
        self._alarms[key] = self._alarms.get(key, 0) + 1
        count = self._alarms[key]
        name = f"alarm {delivery.alarm} {delivery.state}"
        detail = f"{count}x via {delivery.source}, last {delivery.received_at:%H:%M:%S}"
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
                sa.GATE.value_set("none"),
            ]
        )
