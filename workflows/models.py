"""Models every procedure shares: inputs' common fields, the timeline, the gate, the result.

Everything that comes from outside (a start input, an Update, a signal) is bounded here, so
a run's state, its status and its history stay small whatever a namespace user sends: an
oversized field is refused, naming the field, never cut short silently.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.requesters import StartProof

# An environment's name (settings.ENVIRONMENT_NAME; not imported: workflow code stays
# free of the settings module).
ENVIRONMENT_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"
Severity = Literal["P0", "P1", "P2", "P3"]
SEVERITIES: tuple[Severity, ...] = ("P0", "P1", "P2", "P3")
# handoff: started by another run whose approver chose it (workflows/handoffs.py).
Trigger = Literal["ui", "cli", "alarm", "schedule", "slack", "handoff"]
Verdict = Literal["ok", "degraded", "failing", "unavailable"]
# stale: approved, but once the run had the resource's lock the resource was no longer what
# the approver saw (another run changed it meanwhile): nothing was done. Not `refused`, which
# is a plan turned down on the diagnosis before anyone approved it.
# not_mitigated: the action ran but its verification did not see the fix (escalated);
# escalated: nothing the procedure may do would help: handed to the people who can.
Outcome = Literal[
    "completed",
    "dry_run",
    "rejected",
    "not_approved",
    "refused",
    "failed",
    "stale",
    "not_mitigated",
    "escalated",
]
StepOutcome = Literal["running", "ok", "failed", "skipped", "refused", "info"]

# Bounds of what a namespace user can put in a run.
MAX_NAME = 64  # an approver, a parameter's name or value
MAX_TEXT = 1000  # a comment, a reason
MAX_RESOURCE = 255  # a resource name in an input
MAX_PARAMS = 10
MAX_WORKFLOW_ID = 400  # `<procedure>/<environment>/<resource>`
Name = Annotated[str, StringConstraints(max_length=MAX_NAME)]
Resource = Annotated[str, StringConstraints(min_length=1, max_length=MAX_RESOURCE)]
# What a refusal log keeps: how many, and the last few, each cut to this length.
KEEP_REFUSALS = 5
MAX_REFUSAL_TEXT = 300


class RunbookInput(BaseModel):
    """Fields every procedure's input has; `{}` from the Temporal UI gets these defaults."""

    # A misspelt field must not be dropped: the run would act on the default resource.
    model_config = ConfigDict(extra="forbid")

    severity: Severity = "P1"
    # Where the run acts: a worker serves one environment and refuses runs for another.
    environment: str = Field("production", pattern=ENVIRONMENT_PATTERN)
    dry_run: bool = False
    requested_by: str = Field("temporal-ui", min_length=1, max_length=100)
    trigger: Trigger = "ui"
    # Asks for a shorter time at each escalation level; the worker honours it only when it
    # is configured for game days (RUNBOOK_GAME_DAY=1). None: the severity's response time.
    approval_timeout_seconds: int | None = Field(None, ge=1, le=7 * 24 * 3600)
    # Who started the run, proven: `runbook start` / `runbook sign-start` sign the start with
    # the requester's key (activities/requesters.py). Without it the requester is unproven.
    requester_proof: StartProof | None = None
    # The run whose approver chose to start this one (a hand-off): linked in both timelines
    # and in the incident log. Covered by the start's signature like every field.
    started_by: str | None = Field(None, min_length=1, max_length=MAX_WORKFLOW_ID)

    @field_validator("requested_by")
    @classmethod
    def _strip(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class Finding(BaseModel):
    """One diagnosis check: what it saw and what it means."""

    check: str
    verdict: Verdict
    summary: str
    data: dict[str, Any] = {}


class Step(BaseModel):
    name: str
    started_at: datetime
    ended_at: datetime | None = None
    outcome: StepOutcome = "running"
    detail: str = ""


class Decision(BaseModel):
    """An approval or a rejection, as the gate judges it."""

    approver: str = ""
    approve: bool = True
    comment: str = ""
    params: dict[str, str] = {}
    expires_at: datetime | None = None
    signature: str = ""
    slack_user: str = ""


class Signed(BaseModel):
    """Proof that the named approver sent the decision: `runbook approve` (or `runbook sign`
    for the Temporal CLI and UI) signs with the approver's key; the worker checks it. A click
    in Slack is signed by the intake for the Slack user who clicked (`slack_user`)."""

    expires_at: datetime | None = None
    signature: str = Field("", max_length=128)
    slack_user: str = Field("", pattern=r"^([UW][A-Z0-9]{2,31})?$")


class Approval(Signed):
    """Sent by Update or signal `approve`."""

    approver: str = Field("", max_length=MAX_NAME)
    comment: str = Field("", max_length=MAX_TEXT)
    # Parameters the plan asks the approver for (e.g. a new budget), as text.
    params: dict[Name, Name] = Field({}, max_length=MAX_PARAMS)

    def as_decision(self) -> Decision:
        return Decision(
            approver=self.approver.strip(),
            comment=self.comment,
            params=self.params,
            expires_at=self.expires_at,
            signature=self.signature,
            slack_user=self.slack_user,
        )


class Rejection(Signed):
    """Sent by Update or signal `reject`."""

    approver: str = Field("", max_length=MAX_NAME)
    reason: str = Field("", max_length=MAX_TEXT)

    def as_decision(self) -> Decision:
        return Decision(
            approver=self.approver.strip(),
            approve=False,
            comment=self.reason,
            expires_at=self.expires_at,
            signature=self.signature,
            slack_user=self.slack_user,
        )


class AlarmDelivery(BaseModel):
    """Deliveries of an alarm (CloudWatch via SNS, Alertmanager) for this run's resource; the
    intake sends a storm's repeats together (`count`)."""

    source: str = Field(max_length=32)  # "cloudwatch" | "alertmanager" | "schedule"
    alarm: str = Field(min_length=1, max_length=255)
    state: Literal["ALARM", "OK"] = "ALARM"
    received_at: datetime
    reason: str = Field("", max_length=MAX_TEXT)
    count: int = Field(1, ge=1, le=10**9)


class Refusals(BaseModel):
    """What a run refused (decisions, alarm deliveries): how many, and the last few."""

    count: int = 0
    last: list[str] = []

    def add(self, text: str) -> str:
        self.count += 1
        cut = text if len(text) <= MAX_REFUSAL_TEXT else text[: MAX_REFUSAL_TEXT - 1] + "…"
        self.last = [*self.last[-(KEEP_REFUSALS - 1) :], cut]
        return cut

    def summary(self) -> str:
        return f"{self.count} refused; last: {self.last[-1]}" if self.last else "none"


class ParamSpec(BaseModel):
    """A number the approver may give with an approval, e.g. the new daily budget; with
    `choices`, one of a few names (e.g. which procedure to start), the first the default; with
    `word`, a word the approver must give (e.g. `override=healthy`): no default, an approval
    without it is refused."""

    name: str
    minimum: float = 0
    maximum: float = 0
    default: float = 0
    integer: bool = False
    help: str = ""
    choices: list[str] = []
    word: str | None = Field(None, max_length=MAX_NAME)

    def missing(self, given: dict[str, str]) -> str | None:
        """Why an approval without this parameter is refused, or None."""
        if self.word is None or self.name in given:
            return None
        how = f"approve with --set {self.name}={self.word}"
        return f"params.{self.name}: required: {self.help} ({how})"

    def check(self, text: str) -> str | None:
        """Why `text` is not an allowed value, or None."""
        if self.word is not None:
            if text == self.word:
                return None
            return f"params.{self.name}: {text!r} is not allowed; allowed: {self.word}"
        if self.choices:
            if text in self.choices:
                return None
            return (
                f"params.{self.name}: {text!r} is not offered; allowed: {', '.join(self.choices)}"
            )
        allowed = f"{self.minimum:g} to {self.maximum:g}"
        try:
            value = int(text) if self.integer else float(text)
        except ValueError:
            kind = "a whole number" if self.integer else "a number"
            return f"params.{self.name}: {text!r} is not {kind}; allowed: {allowed}"
        if not self.minimum <= value <= self.maximum:
            return f"params.{self.name}: {text} is out of bounds; allowed: {allowed}"
        return None

    def value(self, given: dict[str, str]) -> float:
        """The value an approval gives (checked), or the default."""
        return float(given[self.name]) if self.name in given else self.default

    def text(self, given: dict[str, str]) -> str:
        """The value an approval gives (checked), or the default, as the gate keeps it (a
        required word has none)."""
        if self.name in given:
            return given[self.name]
        if self.word is not None:
            return ""
        return self.choices[0] if self.choices else f"{self.default:g}"

    def shown(self, given: dict[str, str]) -> str:
        """The value as a person reads it: a choice or a word, or the number."""
        return self.text(given) if self.choices or self.word else f"{self.value(given):g}"

    def differs(self, one: dict[str, str], other: dict[str, str]) -> bool:
        if self.choices or self.word is not None:
            return self.text(one) != self.text(other)
        return self.value(one) != self.value(other)

    def allowed(self) -> str:
        """What may be given, for the gate's announcement."""
        if self.word is not None:
            return f"{self.word} (required)"
        if self.choices:
            return f"one of {', '.join(self.choices)} (default {self.choices[0]})"
        return f"{self.minimum:g}-{self.maximum:g} (default {self.default:g})"


class PendingGate(BaseModel):
    gate: str
    requested_at: datetime
    expires_at: datetime
    requested_by: str
    severity: Severity
    summary: str
    plan: list[str]
    params: list[ParamSpec] = []
    # The escalation level now asked, the roles that may decide at it, and when it ends.
    level: str = "on-call"
    may_decide: list[str] = []
    level_deadline: datetime | None = None
    approvals_required: int = 1
    approved_by: list[str] = []
    # Whether the worker proved who started the run (a signed start), and how or why not.
    requester_proven: bool | None = None
    requester_detail: str = ""


class GateResult(BaseModel):
    approved: bool
    timed_out: bool = False
    # Every person whose approval counted (two for a four-eyes gate).
    approvers: list[str] = []
    decided_by: str | None = None
    decided_at: datetime | None = None
    comment: str = ""
    # The approver's parameters merged over the defaults, validated against their bounds.
    params: dict[str, str] = {}

    def number(self, name: str) -> float:
        return float(self.params[name])


class DecisionAck(BaseModel):
    gate: str
    approved: bool
    decided_by: str


class RunbookStatus(BaseModel):
    workflow_id: str
    procedure: str
    resource: str
    severity: Severity
    phase: str
    pending_gate: PendingGate | None
    timeline: list[Step]
    outcome: Outcome | None = None
    # Decisions and alarm deliveries the run refused: a count and the last few.
    refused: Refusals = Refusals()


class RunbookResult(BaseModel):
    workflow_id: str
    procedure: str
    resource: str
    severity: Severity
    outcome: Outcome
    summary: str
    findings: list[Finding] = []
    plan: list[str] = []
    decision: GateResult | None = None
    timeline: list[Step] = []
