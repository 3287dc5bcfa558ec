"""Who may decide, when the gate escalates, and whether an approval really comes from the
person it names. Keys and the roster stay in the worker: workflow code only sees verdicts.

Trust model: anyone with access to the Temporal namespace can send an Update or a signal
with any name in it. So a decision carries an HMAC-SHA256, made with the approver's own key,
over the workflow id, run id, gate, decision, approver, parameters and an expiry. The
worker checks it against the keys file; the workflow refuses a signature it has seen before.
"""

import hashlib
import hmac
import json
import tomllib
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from temporalio import activity

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


class EscalationRequest(BaseModel):
    procedure: str
    severity: str
    opened_at: datetime
    # A run's own override of each level's time (tests, game days).
    level_seconds: int | None = None


class EscalationLevel(BaseModel):
    role: str
    deadline: datetime
    may_decide: list[str]  # the roles allowed at this level: this one and above


class EscalationPlan(BaseModel):
    levels: list[EscalationLevel]
    approvals_required: int
    # A plan recorded before this field existed reads True: its replay pages as it did.
    paging: bool = True


class SignedDecision(BaseModel):
    """What an approver signs: every field that changes the meaning of the decision."""

    workflow_id: str
    run_id: str
    gate: str
    approve: bool
    approver: str
    params: dict[str, str] = {}
    expires_at: datetime

    def message(self) -> bytes:
        fields = self.model_dump(mode="json")
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


class VerifyRequest(BaseModel):
    decision: SignedDecision
    signature: str


class VerifyResult(BaseModel):
    ok: bool
    reason: str = ""
    role: str | None = None


def sign(decision: SignedDecision, key: str) -> str:
    return hmac.new(key.encode(), decision.message(), hashlib.sha256).hexdigest()


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
        self, policy: EscalationPolicy, roster_file: Path | None, keys_file: Path | None
    ) -> None:
        self._policy = policy
        self._roster_file = roster_file
        self._keys_file = keys_file

    @activity.defn(name="approvals.plan_escalation")
    def plan_escalation(self, req: EscalationRequest) -> EscalationPlan:
        path = ESCALATION_PATH[req.severity]
        deadline = req.opened_at
        levels = []
        for role in path:
            deadline = self._level_end(req, deadline)
            allowed = list(ROLES[ROLES.index(role) :])
            levels.append(EscalationLevel(role=role, deadline=deadline, may_decide=allowed))
        required = 2 if req.procedure in self._policy.two_approvers else 1
        return EscalationPlan(
            levels=levels, approvals_required=required, paging=self._policy.paging
        )

    def _level_end(self, req: EscalationRequest, start: datetime) -> datetime:
        if req.level_seconds is not None:
            return start + timedelta(seconds=req.level_seconds)
        if req.severity == "P3":
            return next_business_day_end(start, self._policy)
        return start + timedelta(minutes=self._policy.response_minutes[req.severity])

    @activity.defn(name="approvals.verify")
    def verify(self, req: VerifyRequest) -> VerifyResult:
        # Files are read on every call: a roster change or a revoked key takes effect at once.
        decision = req.decision
        role = load_table(self._roster_file, "people").get(decision.approver)
        if role is None:
            return VerifyResult(ok=False, reason=f"{decision.approver!r} is not on the roster")
        if role not in ROLES:
            return VerifyResult(ok=False, reason=f"roster role {role!r} is none of {ROLES}")
        key = load_table(self._keys_file, "keys").get(decision.approver)
        if not key:
            return VerifyResult(ok=False, reason=f"no key is registered for {decision.approver!r}")
        if not hmac.compare_digest(sign(decision, key), req.signature):
            return VerifyResult(ok=False, reason="signature does not match: forged or altered")
        now = datetime.now(UTC)
        if decision.expires_at <= now:
            return VerifyResult(ok=False, reason=f"signature expired at {decision.expires_at}")
        if decision.expires_at > now + MAX_VALIDITY:
            return VerifyResult(ok=False, reason=f"expiry is more than {MAX_VALIDITY} ahead")
        return VerifyResult(ok=True, role=role)
