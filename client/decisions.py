"""Signed decisions and starts: what `runbook approve`, `runbook sign`, `runbook start`,
`runbook sign-start` and the demos send."""

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from temporalio.client import WorkflowHandle

from activities.approvals import SignedDecision, load_table, sign
from activities.requesters import ProofKind, SignedStart, input_digest, sign_start
from client.errors import BadInput
from settings import get_settings
from workflows.gate import GatedRunbook
from workflows.models import Approval, DecisionAck, Rejection, RunbookInput

if TYPE_CHECKING:
    from workflows.registry import Procedure

SIGNATURE_VALIDITY = timedelta(minutes=10)
# The embedded stack's keys file in its state dir (written by `runbook stack up`).
LOCAL_KEYS_FILE = "approver-keys.toml"


def local_keys_file() -> Path | None:
    """The embedded stack's keys file, when the stack in use is the local one: the keys file
    the worker was given (RUNBOOK_APPROVER_KEYS) is unset or is that very file. A production
    keys file is never read here: each person signs with their own key."""
    settings = get_settings()
    local = settings.state_dir / LOCAL_KEYS_FILE
    given = settings.approver_keys_file
    if not local.exists() or (given is not None and given.resolve() != local.resolve()):
        return None
    return local


def approver_key(name: str) -> str:
    """The key `name` signs with: RUNBOOK_APPROVER_KEY; on the embedded stack, the local
    person's key from the stack's keys file."""
    key = os.environ.get("RUNBOOK_APPROVER_KEY", "")
    if key:
        return key
    local = local_keys_file()
    if local is None:
        raise no_key(name)
    keys = load_table(local, "keys")
    if name not in keys:
        raise BadInput(
            f"--as {name}: no key for {name!r} in the local stack's {local} (people there: "
            f"{', '.join(keys)}); or export RUNBOOK_APPROVER_KEY=<{name}'s own key>"
        )
    return keys[name]


def no_key(name: str) -> BadInput:
    given = get_settings().approver_keys_file
    where = (
        f"the worker's keys are in RUNBOOK_APPROVER_KEYS={given}"
        if given
        else f"on the embedded stack, `runbook stack up` writes each local person's key to "
        f"{get_settings().state_dir / LOCAL_KEYS_FILE} and the CLI reads it from there"
    )
    return BadInput(
        f"RUNBOOK_APPROVER_KEY is not set: export RUNBOOK_APPROVER_KEY=<{name}'s own key> ({where})"
    )


def requester_key(name: str) -> str | None:
    """The key a `runbook start` by `name` is signed with, as approver_key finds it; None
    when there is none (the start is then unsigned: its requester unproven)."""
    try:
        return approver_key(name)
    except BadInput:
        return None


def key_source(name: str) -> str:
    """Where `approver_key(name)` took the key from, for a refusal's hint."""
    if os.environ.get("RUNBOOK_APPROVER_KEY"):
        return "RUNBOOK_APPROVER_KEY"
    local = local_keys_file()
    return f"{local} ({name})" if local else "RUNBOOK_APPROVER_KEY"


Inp = TypeVar("Inp", bound=RunbookInput)


def signed_start(
    procedure: "Procedure",
    inp: Inp,
    key: str,
    now: datetime | None = None,
    *,
    kind: ProofKind = "person",
    slack_user: str = "",
) -> Inp:
    """The input with a proof that its `requested_by` asked for it, made with their key (or
    the intake's, `kind="slack"`, for the Slack user who typed it): good for the first run of
    its workflow id in the next ten minutes (activities/requesters.py). `now` is the clock
    the worker checks it against (a test server's may run ahead)."""
    unsigned = inp.model_copy(update={"requester_proof": None})
    now = now or datetime.now(UTC)
    start = SignedStart(
        kind=kind,
        requester=inp.requested_by,
        workflow_type=procedure.workflow_type,
        workflow_id=procedure.workflow_id(inp),
        input_digest=input_digest(unsigned.model_dump(mode="json")),
        issued_at=now,
        expires_at=now + SIGNATURE_VALIDITY,
        slack_user=slack_user,
    )
    return unsigned.model_copy(update={"requester_proof": sign_start(start, key)})


def make_signed(
    workflow_id: str,
    run_id: str,
    gate: str,
    approver: str,
    key: str,
    *,
    approve: bool = True,
    params: dict[str, str] | None = None,
    comment: str = "",
    reason: str = "",
) -> Approval | Rejection:
    decision = SignedDecision(
        workflow_id=workflow_id,
        run_id=run_id,
        gate=gate,
        approve=approve,
        approver=approver,
        params=params or {},
        expires_at=datetime.now(UTC) + SIGNATURE_VALIDITY,
    )
    signature = sign(decision, key)
    if approve:
        return Approval(
            approver=approver,
            comment=comment,
            params=decision.params,
            expires_at=decision.expires_at,
            signature=signature,
        )
    return Rejection(
        approver=approver, reason=reason, expires_at=decision.expires_at, signature=signature
    )


async def send_decision(handle: WorkflowHandle, decision: Approval | Rejection) -> DecisionAck:
    """The gate's answer to a signed decision, sent by its Update. The SDK decodes the
    answer as the handler says (a DecisionAck); its type hints for a named async handler
    say coroutine, hence the cast."""
    if isinstance(decision, Approval):
        ack = await handle.execute_update(GatedRunbook.approve, decision)
    else:
        ack = await handle.execute_update(GatedRunbook.reject, decision)
    return cast(DecisionAck, ack)
