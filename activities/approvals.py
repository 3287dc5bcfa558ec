"""Who may decide, when the gate escalates, and whether an approval really comes from the
person it names. Keys and the roster stay in the worker: workflow code only sees verdicts.

Trust model: anyone with access to the Temporal namespace can send an Update or a signal
with any name in it. So a decision carries an HMAC-SHA256, made with the approver's own key,
over the workflow id, run id, gate, decision, approver, parameters and an expiry. The
worker checks it against the keys file; the workflow refuses a signature it has seen before.

A decision clicked in Slack is signed by the intake (RUNBOOK_INTAKE_KEY) once it has
verified Slack's request signature; it names the Slack user, and the worker takes it only
for the roster person that Slack user id belongs to (`slack = "U..."` in the roster).

A decision is checked twice: when the gate takes it (`approvals.verify`), and again by the
worker right before each mutating activity runs (`DecisionGuard`), against the run that
activity belongs to. A reset run (or any copy of a run) has a new run id: the approvals it
replays from its history were signed for another run, so nothing it would change again runs.
"""

import hashlib
import hmac
import json
import tomllib
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, ValidationError
from temporalio import activity

from activities.requesters import EarlierRuns, RequesterClaim, RequesterVerdict, judge_requester

# runbook.md, "Escalation Matrix": the path of each severity, lowest level first.
ROLES = ("on-call", "engineering-manager", "cto")
ESCALATION_PATH: dict[str, tuple[str, ...]] = {
    "P0": ("on-call", "engineering-manager", "cto"),
    "P1": ("on-call", "engineering-manager"),
    "P2": ("on-call",),
    "P3": ("on-call",),
}
# The longest a signature may be valid for: a stolen one is useless soon after.
MAX_VALIDITY = timedelta(hours=1)


# A Slack user id (U... or W... for Enterprise Grid), as Slack's payloads carry it.
SLACK_USER_ID = r"^[UW][A-Z0-9]{2,31}$"


class RosterEntry(BaseModel):
    """One person of the roster: `name = "on-call"`, or `name = { role = "on-call",
    slack = "U..." }` for someone who may also decide by a Slack click."""

    role: str
    slack: str | None = Field(None, pattern=SLACK_USER_ID)


def load_roster(path: Path | None) -> dict[str, RosterEntry]:
    """The roster file's `[people]`; empty when no file is configured."""
    if path is None:
        return {}
    people = tomllib.loads(path.read_text()).get("people", {})
    if not isinstance(people, dict):
        raise ValueError(f"{path}: [people] must be a table of name = role")
    roster = {}
    for name, value in people.items():
        try:
            entry = value if isinstance(value, dict) else {"role": value}
            roster[str(name)] = RosterEntry.model_validate(entry)
        except ValidationError as err:
            raise ValueError(f"{path}: people.{name}: {err.errors()[0]['msg']}") from None
    return roster


def slack_people(roster: dict[str, RosterEntry]) -> dict[str, str]:
    """Slack user id -> roster name, for the people who have one."""
    return {entry.slack: name for name, entry in roster.items() if entry.slack}


class EscalationPolicy(BaseModel):
    """Configuration: response times, business hours and which procedures need four eyes."""

    response_minutes: dict[str, int] = {"P0": 15, "P1": 60, "P2": 240}
    # P3 is "next business day": due at the end of the next business day.
    business_hours: tuple[time, time] = (time(9), time(17))
    business_days: tuple[int, ...] = (0, 1, 2, 3, 4)  # Monday to Friday
    timezone: str = "UTC"
    two_approvers: frozenset[str] = frozenset()
    # False when no PagerDuty routing key is configured: the gate then skips its page
    # activities, which could only answer "skipped" (one round trip before the action).
    paging: bool = True
    # True when a ticket queue is configured: a P3 gate opens a ticket (activities/tickets.py).
    tickets: bool = False
    # A game-day worker (RUNBOOK_GAME_DAY=1) lets a run shorten its levels' time; otherwise
    # the SLA clock is the policy's alone, whatever the start input asks.
    game_day: bool = False


def business_hours(text: str) -> tuple[time, time]:
    """`09:00-17:00` (RUNBOOK_BUSINESS_HOURS) as two times."""
    start, _, end = text.partition("-")
    return time.fromisoformat(start), time.fromisoformat(end)


class SlaRow(BaseModel):
    """One severity's response times (runbook.md, "Response Time SLAs", "Escalation Matrix")."""

    severity: str
    path: list[str]
    level_minutes: int | None  # each level's time; None: next business day
    total_minutes: int | None  # from the gate's opening to the end of the last level
    text: str


def sla_table(policy: EscalationPolicy) -> list[SlaRow]:
    """What each severity's gate promises: each level's time and the total to the last level
    (a gate that nobody answers by then ends not approved)."""
    rows = []
    for severity, path in ESCALATION_PATH.items():
        route = " -> ".join(path)
        minutes = policy.response_minutes.get(severity)
        total = minutes * len(path) if minutes is not None else None
        if minutes is None:  # P3: next business day
            end = f"{policy.business_hours[1]:%H:%M} {policy.timezone}"
            text = f"{severity}: by the end of the next business day ({end}); {route}, by ticket"
        else:
            text = f"{severity}: {minutes} min a level ({route}); {total} min to the last level"
        row = SlaRow(
            severity=severity,
            path=list(path),
            level_minutes=minutes,
            total_minutes=total,
            text=text,
        )
        rows.append(row)
    return rows


class EscalationRequest(BaseModel):
    procedure: str
    severity: str
    opened_at: datetime
    # What the run's input asks for each level's time: honoured on a game-day worker only,
    # and only when shorter than the policy's.
    level_seconds: int | None = None
    # Who started the run, with the start's proof if it has one.
    requester: RequesterClaim | None = None


class EscalationLevel(BaseModel):
    role: str
    deadline: datetime
    may_decide: list[str]  # the roles allowed at this level: this one and above


class EscalationPlan(BaseModel):
    levels: list[EscalationLevel]
    approvals_required: int
    # A plan recorded before this field existed reads True: its replay pages as it did.
    paging: bool = True
    tickets: bool = False
    # None in a plan recorded before requesters were checked.
    requester_proven: bool | None = None
    requester_detail: str = ""
    # Why the run's own clock was not used, when it asked for one.
    clock_detail: str = ""


class SignedDecision(BaseModel):
    """What an approver signs: every field that changes the meaning of the decision."""

    workflow_id: str
    run_id: str
    gate: str
    approve: bool
    approver: str
    params: dict[str, str] = {}
    expires_at: datetime
    # Set when the intake signed for a Slack click: the Slack user who clicked.
    slack_user: str = ""

    def message(self) -> bytes:
        fields = self.model_dump(mode="json")
        if not self.slack_user:
            del fields["slack_user"]  # signatures made before Slack existed stay valid
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


class VerifyRequest(BaseModel):
    decision: SignedDecision
    signature: str


class VerifyResult(BaseModel):
    ok: bool
    reason: str = ""
    role: str | None = None


class Approved(BaseModel):
    """One approval as the gate took it: enough to check its signature again."""

    approver: str
    params: dict[str, str] = {}
    expires_at: datetime
    signature: str
    slack_user: str = ""  # set: intake-signed for this Slack user's click


class Authority(BaseModel):
    """The approvals a mutating activity acts on (its request's `authority`)."""

    gate: str
    approvals: list[Approved] = Field(min_length=1)


# Activities that change what the gate asked about. The worker runs one only when its request
# carries approvals signed for the very run that scheduled it (DecisionGuard). Requesting a
# certificate and publishing its validation record come before cert-renewal's gate by design
# (nothing a client sees changes), so they are not here.
GUARDED_ACTIVITIES = frozenset(
    {
        "rds.force_failover",
        "ecs.scale_service",
        "ecs.force_new_deployment",
        "ecs.register_memory_revision",
        "ecs.use_task_definition",
        "secrets.set_number",
        "elb.set_listener_certificate",
        "handoffs.start",
    }
)


def sign(decision: SignedDecision, key: str) -> str:
    return hmac.new(key.encode(), decision.message(), hashlib.sha256).hexdigest()


def signature_refusal(
    decision: SignedDecision,
    signature: str,
    roster: dict[str, RosterEntry],
    keys: dict[str, str],
    intake_key: str | None = None,
) -> str | None:
    """Why the signature does not prove the decision (expiry aside), or None. A Slack
    decision is signed with the intake's key and holds only for the person whose Slack id
    clicked."""
    person = roster.get(decision.approver)
    if person is None:
        return f"{decision.approver!r} is not on the roster"
    if decision.slack_user:
        if person.slack != decision.slack_user:
            return f"Slack user {decision.slack_user} is not {decision.approver!r} on the roster"
        key = intake_key
        if not key:
            return "this worker has no intake key (RUNBOOK_INTAKE_KEY) to check a Slack decision"
    else:
        key = keys.get(decision.approver)
        if not key:
            return f"no key is registered for {decision.approver!r}"
    if not hmac.compare_digest(sign(decision, key), signature):
        return "signature does not match: forged or altered"
    return None


def authority_refusal(
    authority: Authority | None,
    workflow_id: str,
    run_id: str,
    roster: dict[str, RosterEntry],
    keys: dict[str, str],
    intake_key: str | None = None,
) -> str | None:
    """Why a mutation may not run in this run with these approvals, or None. The expiry is
    not checked again: the gate took the approvals while they were valid, and a rollout of
    several services may act after it."""
    if authority is None:
        return "no approval came with this change: it runs only after its gate"
    for approved in authority.approvals:
        decision = SignedDecision(
            workflow_id=workflow_id,
            run_id=run_id,
            gate=authority.gate,
            approve=True,
            approver=approved.approver,
            params=approved.params,
            expires_at=approved.expires_at,
            slack_user=approved.slack_user,
        )
        if refusal := signature_refusal(decision, approved.signature, roster, keys, intake_key):
            return (
                f"the approval by {approved.approver!r} does not hold for run {run_id} "
                f"({refusal}); a reset or copied run needs a fresh decision"
            )
    return None


def load_table(path: Path | None, table: str) -> dict[str, str]:
    """`[table]` of a TOML file as name -> text; empty when no file is configured."""
    if path is None:
        return {}
    data = tomllib.loads(path.read_text())
    values = data.get(table, {})
    if not isinstance(values, dict):
        raise ValueError(f"{path}: [{table}] must be a table of name = value")
    return {str(k): str(v) for k, v in values.items()}


def next_business_day_end(opened_at: datetime, policy: EscalationPolicy) -> datetime:
    zone = ZoneInfo(policy.timezone)
    day = opened_at.astimezone(zone).date()
    while True:
        day += timedelta(days=1)
        if day.weekday() in policy.business_days:
            return datetime.combine(day, policy.business_hours[1], zone).astimezone(UTC)


class ApprovalActivities:
    def __init__(
        self,
        policy: EscalationPolicy,
        roster_file: Path | None,
        keys_file: Path | None,
        *,
        intake_key: str | None = None,
        earlier_runs: EarlierRuns | None = None,
    ) -> None:
        self._policy = policy
        self._roster_file = roster_file
        self._keys_file = keys_file
        self._intake_key = intake_key
        self._earlier_runs = earlier_runs

    @activity.defn(name="approvals.plan_escalation")
    async def plan_escalation(self, req: EscalationRequest) -> EscalationPlan:
        requester = await self._judge_requester(req)
        level_time, clock_detail = self._level_time(req)
        path = ESCALATION_PATH[req.severity]
        deadline = req.opened_at
        levels = []
        for role in path:
            deadline = self._level_end(req.severity, deadline, level_time)
            allowed = list(ROLES[ROLES.index(role) :])
            levels.append(EscalationLevel(role=role, deadline=deadline, may_decide=allowed))
        four_eyes = req.procedure in self._policy.two_approvers
        # Nobody may approve their own P0/P1 request: without a proven requester, nobody
        # knows whose request it is, so two distinct people must approve.
        unproven_urgent = req.severity in ("P0", "P1") and not requester.proven
        return EscalationPlan(
            levels=levels,
            approvals_required=2 if four_eyes or unproven_urgent else 1,
            paging=self._policy.paging,
            tickets=self._policy.tickets,
            requester_proven=requester.proven,
            requester_detail=requester.detail,
            clock_detail=clock_detail,
        )

    async def _judge_requester(self, req: EscalationRequest) -> RequesterVerdict:
        if req.requester is None:
            return RequesterVerdict(proven=False, detail="the run did not say who started it")
        keys = load_table(self._keys_file, "keys")
        slack = slack_people(load_roster(self._roster_file))
        return await judge_requester(
            req.requester, keys, self._intake_key, self._earlier_runs, slack
        )

    def _level_time(self, req: EscalationRequest) -> tuple[timedelta | None, str]:
        """The run's own level time when this worker honours it, else None (the policy's),
        with why it was not honoured."""
        if req.level_seconds is None:
            return None, ""
        asked = timedelta(seconds=req.level_seconds)
        if not self._policy.game_day:
            return None, (
                f"approval_timeout_seconds={req.level_seconds} ignored: the SLA clock is the "
                "worker's (RUNBOOK_GAME_DAY=1 lets a run shorten it)"
            )
        first = self._level_end(req.severity, req.opened_at, None) - req.opened_at
        if asked > first:
            return None, (
                f"approval_timeout_seconds={req.level_seconds} ignored: a run may shorten "
                f"its levels' time, not lengthen it ({first} here)"
            )
        return asked, ""

    def _level_end(self, severity: str, start: datetime, level_time: timedelta | None) -> datetime:
        if level_time is not None:
            return start + level_time
        if severity == "P3":
            return next_business_day_end(start, self._policy)
        return start + timedelta(minutes=self._policy.response_minutes[severity])

    @activity.defn(name="approvals.verify")
    def verify(self, req: VerifyRequest) -> VerifyResult:
        # Files are read on every call: a roster change or a revoked key takes effect at once.
        decision = req.decision
        roster = load_roster(self._roster_file)
        person = roster.get(decision.approver)
        role = person.role if person else None
        if role is not None and role not in ROLES:
            return VerifyResult(ok=False, reason=f"roster role {role!r} is none of {ROLES}")
        keys = load_table(self._keys_file, "keys")
        if refusal := signature_refusal(decision, req.signature, roster, keys, self._intake_key):
            return VerifyResult(ok=False, reason=refusal)
        now = datetime.now(UTC)
        if decision.expires_at <= now:
            return VerifyResult(ok=False, reason=f"signature expired at {decision.expires_at}")
        if decision.expires_at > now + MAX_VALIDITY:
            return VerifyResult(ok=False, reason=f"expiry is more than {MAX_VALIDITY} ahead")
        return VerifyResult(ok=True, role=role)
