"""Who asked for a run, proven: a start signed with the requester's own key.

`requested_by` is free text in a start input: anyone with access to the Temporal namespace can
write any name there. A start is *proven* when it carries a `StartProof` that the worker
checks here:

- kind `person`: an HMAC-SHA256 with the requester's key (the keys file, as for decisions)
  over the workflow type and id, a digest of the whole input, and an issue and expiry time
  (at most an hour apart). `runbook start` signs with RUNBOOK_APPROVER_KEY; `runbook
  sign-start` prints a signed input for the Temporal CLI or UI.
- kind `intake`: the same, with the intake's key (RUNBOOK_INTAKE_KEY), for what the alarm
  webhook and the schedules start; the requester must then be `alarm:<name>` or
  `schedule:<name>`.
- kind `slack`: the intake's key too, for `/runbook start` in Slack: the requester is the
  roster person whose Slack id (`slack_user`, signed) typed it, checked against the roster.
- kind `handoff`: the intake key too, made by the worker when an approver chose, in a
  signed decision the worker checked (activities/handoffs.py), to start another procedure:
  the requester is that approver and the trigger `handoff`.

A proof is good for one run: the first run of its workflow id, started after it was signed,
that carries it (Temporal's visibility says which runs that id had since; their start events
say which proof each carried). A copy of a proof in a later start
(the input of every run is visible to namespace users) proves nothing.
"""

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

# The longest a signed start may be valid for.
MAX_START_VALIDITY = timedelta(hours=1)
# The signer's clock and Temporal's may disagree this much.
CLOCK_SKEW = timedelta(minutes=5)
ProofKind = Literal["person", "intake", "slack", "handoff"]
MACHINE_REQUESTERS = ("alarm:", "schedule:")


class StartProof(BaseModel):
    """Carried in a start input (`requester_proof`); made by `sign_start`."""

    kind: ProofKind = "person"
    issued_at: datetime
    expires_at: datetime
    signature: str = Field(min_length=1, max_length=128)
    # Kind `slack`: who typed the command (Slack user id).
    slack_user: str = Field("", max_length=32)


class SignedStart(BaseModel):
    """What a start proof signs: every field that changes the meaning of the start."""

    kind: ProofKind
    requester: str
    workflow_type: str
    workflow_id: str
    input_digest: str
    issued_at: datetime
    expires_at: datetime
    slack_user: str = ""

    def message(self) -> bytes:
        fields = {"purpose": "start", **self.model_dump(mode="json")}
        if not self.slack_user:
            del fields["slack_user"]  # starts signed before Slack existed stay valid
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def input_digest(fields: dict[str, Any]) -> str:
    """SHA-256 of a start input as JSON (`model_dump(mode="json")`), without its proof."""
    rest = {k: v for k, v in fields.items() if k != "requester_proof"}
    return hashlib.sha256(
        json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def sign_start(start: SignedStart, key: str) -> StartProof:
    signature = hmac.new(key.encode(), start.message(), hashlib.sha256).hexdigest()
    return StartProof(
        kind=start.kind,
        issued_at=start.issued_at,
        expires_at=start.expires_at,
        signature=signature,
        slack_user=start.slack_user,
    )


class RequesterClaim(BaseModel):
    """What the run says about who started it, for the worker to judge."""

    requester: str
    trigger: str
    workflow_type: str
    workflow_id: str
    run_id: str
    run_started_at: datetime
    input_digest: str
    proof: StartProof | None = None


class RequesterVerdict(BaseModel):
    proven: bool
    # Why not (or how: "signed by alice"), for the timeline and the gate.
    detail: str


# (workflow id, since, proof signature) -> [(run id, start time)] of the runs of that id
# started since then whose start carried the same proof (worker.earlier_runs).
EarlierRuns = Callable[[str, datetime, str], Awaitable[list[tuple[str, datetime]]]]


async def judge_requester(
    claim: RequesterClaim,
    keys: dict[str, str],
    intake_key: str | None,
    earlier_runs: EarlierRuns | None,
    slack_people: dict[str, str] | None = None,
) -> RequesterVerdict:
    """`slack_people`: Slack user id -> roster name (a Slack start's requester)."""
    proof = claim.proof
    if proof is None:
        return RequesterVerdict(proven=False, detail="the start was not signed")
    if refusal := _signature_refusal(claim, proof, keys, intake_key, slack_people or {}):
        return RequesterVerdict(proven=False, detail=refusal)
    if earlier_runs is None:
        return RequesterVerdict(proven=False, detail="this worker cannot look up earlier runs")
    since = proof.issued_at - CLOCK_SKEW
    for run_id, started in await earlier_runs(claim.workflow_id, since, proof.signature):
        if run_id != claim.run_id and started <= claim.run_started_at:
            return RequesterVerdict(
                proven=False,
                detail=f"the signed start was already used by run {run_id}: a copy proves nothing",
            )
    how = {
        "intake": "by the intake",
        "slack": f"by the intake for {claim.requester} (Slack {proof.slack_user})",
        "handoff": f"for {claim.requester}'s hand-off",
    }.get(proof.kind, f"by {claim.requester}")
    return RequesterVerdict(proven=True, detail=f"start signed {how}")


def _signature_refusal(
    claim: RequesterClaim,
    proof: StartProof,
    keys: dict[str, str],
    intake_key: str | None,
    slack_people: dict[str, str],
) -> str | None:
    if proof.kind in ("intake", "slack", "handoff"):
        if proof.kind == "intake" and not claim.requester.startswith(MACHINE_REQUESTERS):
            return f"an intake-signed start names an alarm or schedule, not {claim.requester!r}"
        if proof.kind == "slack" and slack_people.get(proof.slack_user) != claim.requester:
            return f"Slack user {proof.slack_user!r} is not {claim.requester!r} on the roster"
        if proof.kind == "handoff" and claim.trigger != "handoff":
            return f"a hand-off start has the trigger handoff, not {claim.trigger!r}"
        key = intake_key
        if not key:
            return "this worker has no intake key (RUNBOOK_INTAKE_KEY) to check the signature"
    else:
        key = keys.get(claim.requester)
        if not key:
            return f"no key is registered for {claim.requester!r}"
    start = SignedStart(
        kind=proof.kind,
        requester=claim.requester,
        workflow_type=claim.workflow_type,
        workflow_id=claim.workflow_id,
        input_digest=claim.input_digest,
        issued_at=proof.issued_at,
        expires_at=proof.expires_at,
        slack_user=proof.slack_user,
    )
    if not hmac.compare_digest(sign_start(start, key).signature, proof.signature):
        return "the start's signature does not match: forged, altered, or for another start"
    if not proof.issued_at - CLOCK_SKEW <= claim.run_started_at <= proof.expires_at:
        return (
            f"the run started outside the signature's validity "
            f"({proof.issued_at:%H:%M:%S} to {proof.expires_at:%H:%M:%S} UTC)"
        )
    if proof.expires_at - proof.issued_at > MAX_START_VALIDITY:
        return f"the signature is valid for more than {MAX_START_VALIDITY}"
    return None
