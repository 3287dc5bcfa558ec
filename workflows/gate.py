"""The approval gate: escalation along the severity's path, who may decide, and the
handlers that take decisions. The trust rules live here and in activities/approvals.py.

Trust model: anyone with access to the Temporal namespace can send an Update or a signal
with any name in it. A decision counts only when the worker has verified its signature
(activities/approvals.py) and the rules below hold: an open gate, the right level, no
self-approval on P0/P1, no second approval by the same person, the same parameters from
every approver, bounded parameters. Decisions on a gate are judged one at a time, and the
rules are checked again after the signature check. A mutation then carries the approvals
(`authority()`), and the worker checks them once more against the run that acts.
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.approvals import (
        ApprovalActivities,
        Approved,
        Authority,
        EscalationLevel,
        EscalationPlan,
        EscalationRequest,
        SignedDecision,
        VerifyRequest,
        VerifyResult,
    )
    from activities.incidents import GateSla
    from activities.notify import Notification, NotifyActivities, NotifyResult, PagerDutyEvent
    from activities.requesters import RequesterClaim, input_digest
    from activities.tickets import TicketActivities, TicketRequest, TicketResult

from workflows import metrics
from workflows import search_attributes as sa
from workflows.base import NOTIFY_RETRY, READ_RETRY, RunbookWorkflow, failure_message
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

# A gate's approval request, escalation and page are tried again until their level ends: a
# short Slack or PagerDuty outage must not lose them, and the gate never waits for them.
# One attempt a try (the workflow sees and records each failure), then a timer: 2 s doubling
# to 5 min, about 300 tries a day at most.
DELIVERY_PATCH = "gate-notifications-retried-for-the-level"
ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)
RETRY_FIRST = timedelta(seconds=2)
RETRY_MAX = timedelta(minutes=5)
# runbook.md, Escalation Matrix: P3 goes to the ticket queue. A P3 gate opens a ticket and
# pages nobody; runs recorded before paged as for any severity.
P3_TICKETS = "p3-ticket-queue"


class GatedRunbook(RunbookWorkflow):
    """A runbook that asks a human before it acts: `await self.gate(...)`."""

    acts = True

    def __init__(self) -> None:
        super().__init__()
        self._approvals: list[Decision] = []
        self._seen_signatures: set[str] = set()
        self._paging = True  # from the gate's escalation plan: False when PagerDuty is off
        self._tickets = False  # from the plan too: True when a ticket queue is configured
        self._gate_name = ""
        # One decision at a time: two approvals arriving together (Updates, signals or both)
        # would otherwise both pass "already approved?" while the worker checks them.
        self._judging = asyncio.Lock()
        # The gate's notifications still being delivered, by channel; `_level_number` tells
        # a delivery its level is over (escalated or decided).
        self._deliveries: dict[str, asyncio.Task[None]] = {}
        self._level_number = 0

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
                requester=self._requester_claim(),
            ),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=READ_RETRY,
        )
        self._approvals, self._decision, self._gate_name = [], None, gate
        self._paging, self._tickets = escalation.paging, escalation.tickets
        self._requester_proven = escalation.requester_proven
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
            requester_proven=escalation.requester_proven,
            requester_detail=escalation.requester_detail,
        )
        self._record_plan(escalation)
        self.set_phase("awaiting approval")
        for number, level in enumerate(escalation.levels):
            self._level_number = number
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
            self._slack.decided(f":hourglass: No decision from {path}: not approved")
        else:
            self._slack.decided(self._decided_line(gate))
        self._approved_at = metrics.gate_closed(self.procedure, level.role, opened, self._decision)
        # Deliveries stop retrying now; one still in flight ends first, so the page's
        # resolve never overtakes its trigger.
        await asyncio.gather(*self._deliveries.values())
        self._gate_slas.append(
            gate_sla(gate, inp.severity, opened, escalation, level.role, self._decision)
        )
        await self._page("resolve", "decided")
        self._pending = None
        workflow.upsert_search_attributes([sa.GATE.value_set("none"), sa.GATE_LEVEL.value_set("")])
        return self._decision

    def _decided_line(self, gate: str) -> str:
        """The approval message's line for the decision, as the timeline says it (whom by,
        and through what)."""
        assert self._decision is not None
        verb = "approved" if self._decision.approved else "rejected"
        said = [s.detail for s in self._timeline if s.name == f"gate {gate} {verb}"]
        mark = ":white_check_mark:" if self._decision.approved else ":no_entry_sign:"
        return f"{mark} {verb.capitalize()} {'; '.join(said)}"

    def _requester_claim(self) -> RequesterClaim:
        info, inp = workflow.info(), self._input
        return RequesterClaim(
            requester=inp.requested_by,
            trigger=inp.trigger,
            workflow_type=info.workflow_type,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            run_started_at=info.workflow_start_time or workflow.now(),
            input_digest=input_digest(inp.model_dump(mode="json")),
            proof=inp.requester_proof,
        )

    def _record_plan(self, escalation: EscalationPlan) -> None:
        """What the worker decided about the requester and the clock (plans recorded before
        it did say nothing)."""
        if escalation.requester_proven is not None:
            who = self._input.requested_by
            if escalation.requester_proven:
                self.record("requester", "ok", f"{who}: {escalation.requester_detail}")
            else:
                more = ""
                if escalation.approvals_required > 1 and self._input.severity in ("P0", "P1"):
                    more = f"; on {self._input.severity} two distinct people must approve"
                self.record(
                    "requester", "info", f"{who} not proven: {escalation.requester_detail}{more}"
                )
        if escalation.clock_detail:
            self.record("escalation clock", "info", escalation.clock_detail)

    def authority(self) -> Authority:
        """The approvals a mutating activity acts on: the worker checks them again, right
        before it acts, against the run the activity belongs to (activities/approvals.py)."""
        return Authority(
            gate=self._gate_name,
            approvals=[
                Approved(
                    approver=d.approver,
                    params=d.params,
                    expires_at=d.expires_at,
                    signature=d.signature,
                    slack_user=d.slack_user,
                )
                for d in self._approvals
                if d.expires_at is not None
            ],
        )

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
            fields[f"param {spec.name}"] = spec.allowed()
        body = gate.summary + "\n" + "\n".join(f"• {line}" for line in gate.plan)
        kind = "approval_request" if first else "escalation"
        if not first:
            until = f"{level.deadline:%Y-%m-%d %H:%M} UTC"
            self._slack.escalated(
                fields, f":rotating_light: Escalated to {level.role} until {until}"
            )
        findings = self.key_findings() if first else None
        if not workflow.patched(DELIVERY_PATCH):
            await self.notify(kind, title, body, fields, findings)
            await self._page("trigger", f"{title} ({level.role})")
            return

        def note() -> Notification:
            """Built when its turn comes: an escalation goes in the thread of the approval
            request once that one was delivered."""
            made = Notification(
                kind=kind,
                title=title,
                severity=self._input.severity,
                text=body,
                fields=fields,
                findings=findings or [],
            )
            if self._slack.ref is not None and not first:
                made.thread, made.broadcast = self._slack.ref, True
            return made

        def posted(made: Any, result: NotifyResult) -> None:
            if first:
                self._slack.posted(made, result, self._update_message)

        self._deliver(
            "slack", kind, f"notify {kind}", level.deadline, NotifyActivities.slack, note, posted
        )
        if self._input.severity == "P3" and workflow.patched(P3_TICKETS):
            if first:  # P3 goes to the ticket queue: one ticket a gate, nobody paged
                await self._open_ticket(f"{title} ({level.role})")
        elif self._paging:
            page = self._page_event("trigger", f"{title} ({level.role})")
            self._deliver(
                "pagerduty",
                "trigger",
                "page trigger",
                level.deadline,
                NotifyActivities.pagerduty,
                lambda: page,
            )

    def _deliver(
        self,
        channel: str,
        kind: str,
        name: str,
        until: datetime,
        send: Callable[[NotifyActivities, Any], Awaitable[NotifyResult]],
        message: Callable[[], Notification | PagerDutyEvent],
        delivered: Callable[[Any, NotifyResult], None] | None = None,
    ) -> None:
        """Deliver in the background, after the channel's earlier message (order kept)."""
        earlier = self._deliveries.get(channel)
        level = self._level_number

        async def deliver() -> None:
            if earlier is not None:
                await earlier
            built = message()

            async def attempt() -> NotifyResult:
                return await workflow.execute_activity_method(
                    send,
                    built,
                    start_to_close_timeout=timedelta(seconds=15),
                    retry_policy=ONE_ATTEMPT,
                )

            result = await self._retry_until(channel, kind, name, until, level, attempt)
            if result is not None and delivered is not None:
                delivered(built, result)

        self._deliveries[channel] = asyncio.create_task(deliver())

    async def _retry_until(
        self,
        channel: str,
        kind: str,
        name: str,
        until: datetime,
        level: int,
        attempt: Callable[[], Awaitable[NotifyResult]],
    ) -> NotifyResult | None:
        """Try until delivered, refused for good (a 4xx: a wrong webhook), or the level is
        over; every failure is counted, the timeline keeps one line for them."""
        failures, wait, line = 0, RETRY_FIRST, None

        def over() -> bool:
            return self._level_number != level or self._decision is not None

        def failed(why: str, then: str) -> None:
            nonlocal line
            detail = f"{failures} failed attempts, last: {why}; {then}"
            if line is None:
                line = self.record(name, "failed", detail)
            else:
                line.detail, line.ended_at = detail, workflow.now()

        while True:
            try:
                result = await attempt()
            except ActivityError as err:
                failures += 1
                metrics.notification_failed(self.procedure, channel, kind)
                why = failure_message(err)
                if not _retryable(err):
                    failed(why, "not retried: refused")
                    return None
                if over():
                    failed(why, "not delivered: the gate moved on")
                    return None
                if workflow.now() + wait >= until:
                    failed(why, "not delivered: the level ended")
                    return None
                failed(why, f"retrying until {until:%Y-%m-%d %H:%M:%S} UTC")
                try:
                    await workflow.wait_condition(over, timeout=wait)
                except TimeoutError:
                    wait = min(wait * 2, RETRY_MAX)
                    continue
                failed(why, "not delivered: the gate moved on")
                return None
            after = f" after {failures} failed attempts" if failures else ""
            self.record(name, "ok" if result.delivered else "skipped", result.detail + after)
            return result

    async def _page(self, action: str, summary: str) -> None:
        """PagerDuty alongside Slack; one alert a gate (dedup key), resolved when decided.
        Nothing when the worker has no PagerDuty routing key (the escalation plan says so)."""
        assert self._pending is not None
        if self._input.severity == "P3" and workflow.patched(P3_TICKETS):
            if action == "trigger":
                await self._open_ticket(summary)
            return
        if not self._paging:
            return
        event = self._page_event(action, summary)
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

    def _page_event(self, action: str, summary: str) -> PagerDutyEvent:
        assert self._pending is not None
        return PagerDutyEvent(
            action=action,  # type: ignore[arg-type]
            dedup_key=f"{workflow.info().workflow_id}/{self._pending.gate}",
            summary=summary,
            severity=self._input.severity,
        )

    async def _open_ticket(self, title: str) -> None:
        """One ticket a gate, linked in the timeline and the incident log; a retried
        activity finds the ticket by the run's and gate's key instead of opening another."""
        gate = self._pending
        assert gate is not None
        if not self._tickets:
            self.record("ticket", "skipped", "P3: no ticket queue configured; nobody paged")
            return
        info = workflow.info()
        text = "\n".join(
            [
                gate.summary,
                "",
                *[f"- {line}" for line in gate.plan],
                "",
                f"Workflow `{info.workflow_id}`, due {gate.expires_at:%Y-%m-%d %H:%M} UTC.",
                f"Decide with `runbook approve {info.workflow_id}` or `runbook reject ...`.",
            ]
        )
        request = TicketRequest(
            dedup=f"{info.workflow_id}/{info.run_id}/{gate.gate}"[:300],
            title=title[:256],
            text=text[:20_000],
        )
        try:
            result: TicketResult = await workflow.execute_activity_method(
                TicketActivities.open,
                request,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=NOTIFY_RETRY,
            )
        except ActivityError as err:
            self.record("ticket", "failed", failure_message(err))
            return
        self._ticket = result.url or self._ticket
        self.record("ticket", "ok" if result.opened else "skipped", result.detail)

    def _closed(self) -> str | None:
        if self._pending is None or self._decision is not None:
            return f"no approval gate is open: the runbook is in phase {self._phase!r}"
        return None

    def _form_refusal(self, decision: Decision) -> str | None:
        """What is wrong with the decision itself, whatever the gate's state."""
        if not decision.approver:
            return "approver: a name is required"
        if not decision.approve and not decision.comment.strip():
            return "reason: a rejection needs a reason"
        if not decision.signature or decision.expires_at is None:
            return "signature: a decision must be signed (runbook approve, or runbook sign)"
        if decision.signature in self._seen_signatures:
            return "signature: already used: a replayed decision is refused"
        return None

    def _refusal(self, decision: Decision) -> str | None:
        """Why this decision cannot be taken now, judged on what the workflow knows (the
        signature itself is checked by the worker); None when it may go on. Checked before
        and again after the worker's check."""
        if closed := self._closed():
            return closed
        gate = self._pending
        assert gate is not None
        if self._input.severity in ("P0", "P1") and decision.approver == gate.requested_by:
            return (
                f"approver: {decision.approver!r} requested this run; on {self._input.severity} "
                "a second person must decide"
            )
        if decision.approve and decision.approver in gate.approved_by:
            return f"approver: {decision.approver!r} already approved; a second person must"
        return self._param_refusal(decision)

    def _param_refusal(self, decision: Decision) -> str | None:
        assert self._pending is not None
        given = decision.params
        specs = {spec.name: spec for spec in self._pending.params}
        unknown = sorted(set(given) - set(specs))
        if unknown:
            allowed = ", ".join(specs) or "none"
            return f"params: {', '.join(unknown)} not asked for by this gate; allowed: {allowed}"
        for name, text in given.items():
            if refusal := specs[name].check(text):
                return refusal
        if decision.approve and self._approvals:
            return self._disagreement(decision)
        return None

    def _disagreement(self, decision: Decision) -> str | None:
        """Every approver of a gate approves the same values: a second approver with other
        numbers is refused, so nobody's approval is applied with a number they did not see."""
        assert self._pending is not None
        first = self._approvals[0]
        for spec in self._pending.params:
            theirs, ours = spec.shown(first.params), spec.shown(decision.params)
            if spec.differs(first.params, decision.params):
                return (
                    f"params.{spec.name}: {ours} differs from the {theirs} that "
                    f"{first.approver} approved; every approver of a gate approves the same "
                    f"values (approve with --set {spec.name}={theirs}, or reject)"
                )
        return None

    async def _authenticate(self, decision: Decision) -> str | None:
        """The worker checks the signature; then the gate's rules again (time passed while
        the worker checked: the gate may have escalated, timed out or been decided), then
        the approver's role against the level."""
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
                    slack_user=decision.slack_user,
                ),
                signature=decision.signature,
            ),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=READ_RETRY,
        )
        if not verdict.ok:
            return f"signature: {verdict.reason}"
        if refusal := self._refusal(decision):
            return refusal
        gate = self._pending
        assert gate is not None
        if verdict.role not in gate.may_decide:
            return (
                f"approver: {decision.approver!r} is {verdict.role}; at level {gate.level} "
                f"only {', '.join(gate.may_decide)} may decide"
            )
        # A word the gate requires (override=healthy), asked of a proven approver only.
        for spec in gate.params if decision.approve else []:
            if refusal := spec.missing(decision.params):
                return refusal
        return None

    async def _judge(self, decision: Decision) -> tuple[str | None, DecisionAck | None]:
        async with self._judging:
            refusal = (
                self._closed()
                or self._form_refusal(decision)
                or self._refusal(decision)
                or await self._authenticate(decision)
            )
            if refusal:
                self.refuse(f"decision {decision.approver!r}: {refusal}")
                return refusal, None
            return None, self._take(decision)

    def _take(self, decision: Decision) -> DecisionAck:
        gate = self._pending
        assert gate is not None
        verb = "approved" if decision.approve else "rejected"
        said = f": {decision.comment}" if decision.comment else ""
        via = f" via slack ({decision.slack_user})" if decision.slack_user else ""
        self.record(f"gate {gate.gate} {verb}", "ok", f"by {decision.approver}{via}{said}")
        if decision.approve:
            self._approvers.append(decision.approver)
            self._first_approval_at = self._first_approval_at or workflow.now()
            gate.approved_by.append(decision.approver)
            self._approvals.append(decision)
            if (left := gate.approvals_required - len(gate.approved_by)) > 0:
                by = self._timeline[-1].detail  # whom by, and through what
                self._slack.line(f":ballot_box_with_check: Approved {by}; waiting for {left} more")
                return DecisionAck(gate=gate.gate, approved=False, decided_by=decision.approver)
        # Every approval carries the same values (_disagreement): the first one's are taken.
        given = self._approvals[0].params if self._approvals else {}
        self._decision = GateResult(
            approved=decision.approve,
            approvers=list(gate.approved_by) if decision.approve else [],
            decided_by=decision.approver,
            decided_at=workflow.now(),
            comment=decision.comment,
            params={
                **{spec.name: spec.text({}) for spec in gate.params if spec.word is None},
                **given,
            },
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
        if decoded := self.decode(approval, Approval, "approve"):
            await self._judge(decoded.as_decision())

    @workflow.signal(name="reject")
    async def reject_signal(self, rejection: RawValue) -> None:
        if decoded := self.decode(rejection, Rejection, "reject"):
            await self._judge(decoded.as_decision())

    def _validate(self, decision: Decision) -> None:
        """Refuses at once, before anything is written to the history."""
        refusal = self._closed() or self._form_refusal(decision) or self._refusal(decision)
        if refusal:
            raise ValueError(refusal)

    async def _decide(self, decision: Decision) -> DecisionAck:
        refusal, ack = await self._judge(decision)
        if ack is None:
            raise ApplicationError(refusal or "refused", type="GateRefused", non_retryable=True)
        return ack


def _retryable(err: ActivityError) -> bool:
    cause = err.cause
    return not (isinstance(cause, ApplicationError) and cause.non_retryable)


def gate_sla(
    gate: str,
    severity: str,
    opened: datetime,
    escalation: EscalationPlan,
    level: str,
    decision: GateResult,
) -> GateSla:
    """The gate against its SLA: met when decided within the first level's time."""
    due, answered = escalation.levels[0].deadline, decision.decided_at
    return GateSla(
        gate=gate,
        severity=severity,
        opened_at=opened,
        due_at=due,
        answered_at=answered,
        level=level,
        met=answered is not None and answered <= due,
        approved=decision.approved,
    )
