"""The approval gate: escalation along the severity's path, who may decide, and the
handlers that take decisions. The trust rules live here and in activities/approvals.py.

Trust model: anyone with access to the Temporal namespace can send an Update or a signal
with any name in it. A decision counts only when the worker has verified its signature
(activities/approvals.py) and the rules below hold: an open gate, the right level, no
self-approval on P0/P1, no second approval by the same person, bounded parameters.
"""

from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.approvals import (
        ApprovalActivities,
        EscalationLevel,
        EscalationPlan,
        EscalationRequest,
        SignedDecision,
        VerifyRequest,
        VerifyResult,
    )
    from activities.notify import NotifyActivities, PagerDutyEvent

from workflows import metrics
from workflows import search_attributes as sa
from workflows.base import NOTIFY_RETRY, READ_RETRY, RunbookWorkflow, failure_message, problems
from workflows.models import (
    Approval,
    Decision,
    DecisionAck,
    Finding,
    GateResult,
    Outcome,
    ParamSpec,
    PendingGate,
    Rejection,
    RunbookResult,
)

D = TypeVar("D", Approval, Rejection)


class GatedRunbook(RunbookWorkflow):
    """A runbook that asks a human before it acts: `await self.gate(...)`."""

    def __init__(self) -> None:
        super().__init__()
        self._approvals: list[Decision] = []
        self._seen_signatures: set[str] = set()
        self._paging = True  # from the gate's escalation plan: False when PagerDuty is off

    async def not_approved(
        self, findings: list[Finding], plan: list[str], unchanged: str = "nothing was changed"
    ) -> RunbookResult:
        """The end of a run whose gate was rejected or timed out: notify, change nothing."""
        decision = self._decision
        if decision is None or decision.timed_out:
            outcome: Outcome = "not_approved"
            summary = f"No decision within the {self._input.severity} response time"
        else:
            outcome = "rejected"
            summary = f"Rejected by {decision.decided_by}: {decision.comment}"
        summary += f"; {unchanged}"
        await self.notify("rejected", f"{self.procedure} not run for {self._resource}", summary, {})
        return self.finish(outcome, summary, findings, plan)

    # ---- the approval gate --------------------------------------------------------------

    async def gate(
        self, gate: str, summary: str, plan: list[str], params: list[ParamSpec] | None = None
    ) -> GateResult:
        """Ask a human and escalate along the severity's path (runbook.md, Escalation Matrix)
        each time a level's response time runs out; after the last level: not approved.
        `params` are numbers the approver may give (checked against their bounds)."""
        inp = self._input
        opened = workflow.now()
        escalation: EscalationPlan = await workflow.execute_activity_method(
            ApprovalActivities.plan_escalation,
            EscalationRequest(
                procedure=self.procedure,
                severity=inp.severity,
                opened_at=opened,
                level_seconds=inp.approval_timeout_seconds,
            ),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=READ_RETRY,
        )
        self._approvals, self._decision = [], None
        self._paging = escalation.paging
        self._pending = PendingGate(
            gate=gate,
            requested_at=opened,
            expires_at=escalation.levels[-1].deadline,
            requested_by=inp.requested_by,
            severity=inp.severity,
            summary=summary,
            plan=plan,
            params=params or [],
            approvals_required=escalation.approvals_required,
        )
        self.set_phase("awaiting approval")
        for number, level in enumerate(escalation.levels):
            self._enter_level(level, first=number == 0)
            await self._announce_level(level, first=number == 0)
            left = max(level.deadline - workflow.now(), timedelta(seconds=1))
            try:
                await workflow.wait_condition(lambda: self._decision is not None, timeout=left)
                break
            except TimeoutError:
                self.record(f"gate {gate} level {level.role} timed out", "info", f"after {left}")
        if self._decision is None:
            self._decision = GateResult(approved=False, timed_out=True)
            path = " -> ".join(level.role for level in escalation.levels)
            self.record(f"gate {gate} timed out", "refused", f"no decision from {path}")
        self._approved_at = metrics.gate_closed(self.procedure, level.role, opened, self._decision)
        await self._page("resolve", "decided")
        self._pending = None
        workflow.upsert_search_attributes([sa.GATE.value_set("none"), sa.GATE_LEVEL.value_set("")])
        return self._decision

    def _enter_level(self, level: EscalationLevel, first: bool) -> None:
        assert self._pending is not None
        metrics.gate_level(self.procedure, level.role, None if first else self._pending.level)
        self._pending.level = level.role
        self._pending.may_decide = level.may_decide
        self._pending.level_deadline = level.deadline
        workflow.upsert_search_attributes(
            [sa.GATE.value_set("waiting"), sa.GATE_LEVEL.value_set(level.role)]
        )
        verb = "opened for" if first else "escalated to"
        self.record(
            f"gate {self._pending.gate} {verb} {level.role}",
            "info",
            f"until {level.deadline:%Y-%m-%d %H:%M} UTC; may decide: {', '.join(level.may_decide)}",
        )

    async def _announce_level(self, level: EscalationLevel, first: bool) -> None:
        gate = self._pending
        assert gate is not None
        title = f"{self.procedure}: approval needed for {self._resource}"
        if not first:
            title = f"ESCALATED to {level.role}: {title}"
        fields = {
            "Requested by": gate.requested_by,
            "Level": level.role,
            "May decide": ", ".join(level.may_decide),
            "Waiting since": f"{gate.requested_at:%H:%M} UTC",
            "Level ends": f"{level.deadline:%Y-%m-%d %H:%M} UTC",
        }
        if gate.approvals_required > 1:
            fields["Approvals needed"] = f"{gate.approvals_required} distinct people"
        for spec in gate.params:
            fields[f"param {spec.name}"] = (
                f"{spec.minimum:g}-{spec.maximum:g} (default {spec.default:g})"
            )
        body = gate.summary + "\n" + "\n".join(f"• {line}" for line in gate.plan)
        await self.notify("approval_request" if first else "escalation", title, body, fields)
        await self._page("trigger", f"{title} ({level.role})")

    async def _page(self, action: str, summary: str) -> None:
        """PagerDuty alongside Slack; one alert a gate (dedup key), resolved when decided.
        Nothing when the worker has no PagerDuty routing key (the escalation plan says so)."""
        assert self._pending is not None
        if not self._paging:
            return
        event = PagerDutyEvent(
            action=action,  # type: ignore[arg-type]
            dedup_key=f"{workflow.info().workflow_id}/{self._pending.gate}",
            summary=summary,
            severity=self._input.severity,
        )
        try:
            result = await workflow.execute_activity_method(
                NotifyActivities.pagerduty,
                event,
                start_to_close_timeout=timedelta(seconds=15),
                retry_policy=NOTIFY_RETRY,
            )
        except ActivityError as err:
            self.record(f"page {action}", "failed", failure_message(err))
            metrics.notification_failed(self.procedure, "pagerduty", action)
            return
        if result.delivered:
            self.record(f"page {action}", "ok", result.detail)

    def _refusal(self, decision: Decision) -> str | None:
        """Why this decision cannot be taken, judged on what the workflow knows (the
        signature itself is checked by the worker); None when it may go on."""
        gate = self._pending
        if gate is None or self._decision is not None:
            return f"no approval gate is open: the runbook is in phase {self._phase!r}"
        if not decision.approver:
            return "approver: a name is required"
        if not decision.approve and not decision.comment.strip():
            return "reason: a rejection needs a reason"
        if not decision.signature or decision.expires_at is None:
            return "signature: a decision must be signed (runbook approve, or runbook sign)"
        if decision.signature in self._seen_signatures:
            return "signature: already used: a replayed decision is refused"
        if self._input.severity in ("P0", "P1") and decision.approver == gate.requested_by:
            return (
                f"approver: {decision.approver!r} requested this run; on {self._input.severity} "
                "a second person must decide"
            )
        if decision.approve and decision.approver in gate.approved_by:
            return f"approver: {decision.approver!r} already approved; a second person must"
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

    async def _authenticate(self, decision: Decision) -> str | None:
        """The worker checks the signature; then the approver's role against the level."""
        assert self._pending is not None and decision.expires_at is not None
        self._seen_signatures.add(decision.signature)  # before awaiting: a replay finds it
        info = workflow.info()
        verdict: VerifyResult = await workflow.execute_activity_method(
            ApprovalActivities.verify,
            VerifyRequest(
                decision=SignedDecision(
                    workflow_id=info.workflow_id,
                    run_id=info.run_id,
                    gate=self._pending.gate,
                    approve=decision.approve,
                    approver=decision.approver,
                    params=decision.params,
                    expires_at=decision.expires_at,
                ),
                signature=decision.signature,
            ),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=READ_RETRY,
        )
        if not verdict.ok:
            return f"signature: {verdict.reason}"
        gate = self._pending
        if gate is None or self._decision is not None:  # decided while we checked
            return "no approval gate is open any more"
        if verdict.role not in gate.may_decide:
            return (
                f"approver: {decision.approver!r} is {verdict.role}; at level {gate.level} "
                f"only {', '.join(gate.may_decide)} may decide"
            )
        return None

    async def _judge(self, decision: Decision) -> tuple[str | None, DecisionAck | None]:
        refusal = self._refusal(decision) or await self._authenticate(decision)
        if refusal:
            self.record("decision refused", "refused", f"{decision.approver!r}: {refusal}")
            return refusal, None
        return None, self._take(decision)

    def _take(self, decision: Decision) -> DecisionAck:
        gate = self._pending
        assert gate is not None
        verb = "approved" if decision.approve else "rejected"
        said = f": {decision.comment}" if decision.comment else ""
        self.record(f"gate {gate.gate} {verb}", "ok", f"by {decision.approver}{said}")
        if decision.approve:
            self._approvers.append(decision.approver)
            self._first_approval_at = self._first_approval_at or workflow.now()
            gate.approved_by.append(decision.approver)
            self._approvals.append(decision)
            if len(gate.approved_by) < gate.approvals_required:
                return DecisionAck(gate=gate.gate, approved=False, decided_by=decision.approver)
        given: dict[str, str] = {}
        for approval in self._approvals:
            given.update(approval.params)
        self._decision = GateResult(
            approved=decision.approve,
            approvers=list(gate.approved_by) if decision.approve else [],
            decided_by=decision.approver,
            decided_at=workflow.now(),
            comment=decision.comment,
            params={**{spec.name: f"{spec.default:g}" for spec in gate.params}, **given},
        )
        return DecisionAck(gate=gate.gate, approved=decision.approve, decided_by=decision.approver)

    # Approval arrives by Update (the caller hears whether it was taken, and why not) or by
    # signal (fire and forget: a refused one is recorded in the timeline).

    @workflow.update(name="approve")
    async def approve(self, approval: Approval) -> DecisionAck:
        return await self._decide(approval.as_decision())

    @approve.validator
    def _validate_approve(self, approval: Approval) -> None:
        self._validate(approval.as_decision())

    @workflow.update(name="reject")
    async def reject(self, rejection: Rejection) -> DecisionAck:
        return await self._decide(rejection.as_decision())

    @reject.validator
    def _validate_reject(self, rejection: Rejection) -> None:
        self._validate(rejection.as_decision())

    # Signals take the raw payload and decode it here: a malformed one (say `approver: 5`)
    # would otherwise be dropped by the SDK with only a log line; here it is refused, with
    # the field, in the timeline, like any other refused decision.

    @workflow.signal(name="approve")
    async def approve_signal(self, approval: RawValue) -> None:
        if decoded := self._decode(approval, Approval, "approve"):
            await self._judge(decoded.as_decision())

    @workflow.signal(name="reject")
    async def reject_signal(self, rejection: RawValue) -> None:
        if decoded := self._decode(rejection, Rejection, "reject"):
            await self._judge(decoded.as_decision())

    def _decode(self, raw: RawValue, model: type[D], signal: str) -> D | None:
        try:
            value = workflow.payload_converter().from_payload(raw.payload, model)
        except Exception as err:  # not JSON, or not the model: nothing to judge
            detail = f"malformed {signal} signal: {problems(err)}"
            self.record("decision refused", "refused", detail)
            return None
        return value if isinstance(value, model) else None

    def _validate(self, decision: Decision) -> None:
        """Refuses at once, before anything is written to the history."""
        refusal = self._refusal(decision)
        if refusal:
            raise ValueError(refusal)

    async def _decide(self, decision: Decision) -> DecisionAck:
        refusal, ack = await self._judge(decision)
        if ack is None:
            raise ApplicationError(refusal or "refused", type="GateRefused", non_retryable=True)
        return ack
