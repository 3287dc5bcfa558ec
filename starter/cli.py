"""`runbook`: start, decide on and follow runbooks; run the local stack and the demos.

Exit status: 0 on success, 2 on bad input (with a message naming what is wrong and what is
allowed), 1 on any other failure.
"""

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from pydantic import BaseModel, ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from activities.approvals import SignedDecision, sign
from activities.notify import temporal_ui_run_url
from settings import get_settings, temporal_client
from workflows.models import (
    SEVERITIES,
    Approval,
    DecisionAck,
    PendingGate,
    Rejection,
    RunbookStatus,
    Signed,
)
from workflows.registry import PROCEDURES, Procedure

QUERY_TIMEOUT = timedelta(seconds=10)


class BadInput(Exception):
    """Exit 2: the user asked for something that is not allowed."""


class Unreachable(Exception):
    """Exit 1: a system the command needs does not answer."""


# ---- parsing ------------------------------------------------------------------------------


def parse_sets(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--set {pair!r}: expected key=value")
        values[key.strip()] = value
    return values


def build_input(procedure: Procedure, args: argparse.Namespace) -> BaseModel:
    values: dict[str, Any] = parse_sets(args.set)
    allowed = sorted(procedure.input_model.model_fields)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise BadInput(
            f"--set {', '.join(unknown)}: unknown for {procedure.name}; "
            f"allowed: {', '.join(allowed)}"
        )
    values.update(
        severity=args.severity, dry_run=args.dry_run, requested_by=args.requested_by, trigger="cli"
    )
    try:
        return procedure.input_model.model_validate(values)
    except ValidationError as err:
        raise BadInput(validation_message(err)) from None


def validation_message(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in err.errors()
    )


# ---- output -------------------------------------------------------------------------------


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, default=str) if getattr(args, "json", False) else text)


def run_link(workflow_id: str, run_id: str) -> str:
    settings = get_settings()
    return temporal_ui_run_url(settings.temporal_ui_url, "default", workflow_id, run_id)


def render_status(status: RunbookStatus, state: str) -> str:
    lines = [
        f"{status.workflow_id}  {status.procedure}  {status.severity}  {state.lower()}",
        f"phase: {status.phase}" + (f"   outcome: {status.outcome}" if status.outcome else ""),
    ]
    if status.pending_gate:
        gate = status.pending_gate
        lines += [
            f"waiting for approval of {gate.gate!r} (requested by {gate.requested_by}, "
            f"expires {gate.expires_at:%H:%M:%S} UTC): {gate.summary}",
            *(f"  - {step}" for step in gate.plan),
        ]
    lines.append("timeline:")
    for step in status.timeline:
        took = ""
        if step.ended_at and step.ended_at != step.started_at:
            took = f" ({(step.ended_at - step.started_at).total_seconds():.1f}s)"
        lines.append(
            f"  {step.started_at:%H:%M:%S}  {step.outcome:<8} {step.name}{took}"
            + (f": {step.detail}" if step.detail else "")
        )
    return "\n".join(lines)


# ---- Temporal -----------------------------------------------------------------------------


async def existing(client: Client, workflow_id: str) -> WorkflowHandle:
    handle = client.get_workflow_handle(workflow_id)
    try:
        await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise BadInput(f"WORKFLOW_ID: no workflow with id {workflow_id!r}") from None
        raise
    return handle


async def query_status(handle: WorkflowHandle) -> RunbookStatus:
    return await handle.query("status", result_type=RunbookStatus, rpc_timeout=QUERY_TIMEOUT)


async def start_procedure(client: Client, procedure: Procedure, inp: BaseModel) -> WorkflowHandle:
    return await client.start_workflow(
        procedure.workflow_type,
        inp,
        id=procedure.workflow_id(inp),
        task_queue=get_settings().task_queue,
        # A second start for the same resource joins the running workflow: never act twice.
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def cmd_start(client: Client, args: argparse.Namespace) -> int:
    procedure = PROCEDURES[args.procedure]
    inp = build_input(procedure, args)
    handle = await start_procedure(client, procedure, inp)
    workflow_id, run_id = handle.id, handle.result_run_id or ""
    data = {"workflow_id": workflow_id, "run_id": run_id, "ui_url": run_link(workflow_id, run_id)}
    emit(args, data, f"started {workflow_id} (run {run_id})\n{data['ui_url']}")
    return 0


SIGNATURE_VALIDITY = timedelta(minutes=10)


def approver_key(args: argparse.Namespace) -> str:
    key = os.environ.get("RUNBOOK_APPROVER_KEY", "")
    if not key:
        raise BadInput(f"RUNBOOK_APPROVER_KEY: set it to the approver key of {args.as_!r}")
    return key


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
) -> Signed:
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


async def sign_decision(client: Client, args: argparse.Namespace, approve: bool) -> Signed:
    """Sign for the gate the run has open now, with the approver's own key."""
    handle = await existing(client, args.workflow_id)
    desc = await handle.describe()
    status = await query_status(handle)
    if status.pending_gate is None:
        raise BadInput(f"{args.workflow_id}: no approval gate is open (phase {status.phase!r})")
    return make_signed(
        desc.id,
        desc.run_id,
        status.pending_gate.gate,
        args.as_,
        approver_key(args),
        approve=approve,
        params=parse_sets(args.set) if approve else {},
        comment=getattr(args, "comment", ""),
        reason=getattr(args, "reason", ""),
    )


def check_start_args(args: argparse.Namespace) -> None:
    build_input(PROCEDURES[args.procedure], args)


def check_decision_args(args: argparse.Namespace) -> None:
    parse_sets(args.set)
    approver_key(args)


async def decide(client: Client, args: argparse.Namespace, approve: bool) -> int:
    handle = await existing(client, args.workflow_id)
    decision = await sign_decision(client, args, approve)
    try:
        ack = await handle.execute_update(
            "approve" if approve else "reject", decision, result_type=DecisionAck
        )
    except WorkflowUpdateFailedError as err:
        raise BadInput(f"{args.workflow_id}: {err.cause or err}") from None
    except RPCError as err:
        if "already completed" in err.message:
            raise BadInput(
                f"{args.workflow_id}: the workflow has finished; no gate is open"
            ) from None
        raise
    if ack.approved:
        text = f"{args.workflow_id}: gate {ack.gate!r} approved by {ack.decided_by}"
    elif approve:
        text = (
            f"{args.workflow_id}: approval of {ack.decided_by} taken; another person must approve"
        )
    else:
        text = f"{args.workflow_id}: gate {ack.gate!r} rejected by {ack.decided_by}"
    emit(args, ack.model_dump(mode="json"), text)
    return 0


async def cmd_approve(client: Client, args: argparse.Namespace) -> int:
    return await decide(client, args, approve=True)


async def cmd_reject(client: Client, args: argparse.Namespace) -> int:
    return await decide(client, args, approve=False)


async def cmd_sign(client: Client, args: argparse.Namespace) -> int:
    """The signed input for `temporal workflow update execute --input` (or the UI)."""
    decision = await sign_decision(client, args, approve=not args.reject)
    print(decision.model_dump_json(exclude_defaults=True))
    return 0


async def cmd_status(client: Client, args: argparse.Namespace) -> int:
    handle = await existing(client, args.workflow_id)
    if args.wait:
        with contextlib.suppress(Exception):  # the status below says how it ended
            await handle.result()
    desc = await handle.describe()
    status = await query_status(handle)
    state = desc.status.name if desc.status else "UNKNOWN"
    data = {"state": state, "run_id": desc.run_id, **status.model_dump(mode="json")}
    emit(args, data, render_status(status, state) + "\n" + run_link(desc.id, desc.run_id))
    failed = desc.status not in (
        None,
        WorkflowExecutionStatus.RUNNING,
        WorkflowExecutionStatus.COMPLETED,
    )
    return 1 if args.wait and failed else 0


def pending_row(
    workflow_id: str, procedure: str, gate: PendingGate, now: datetime
) -> dict[str, Any]:
    return {
        "workflow_id": workflow_id,
        "procedure": procedure,
        "severity": gate.severity,
        "gate": gate.gate,
        "level": gate.level,
        "may_decide": gate.may_decide,
        "approvals_required": gate.approvals_required,
        "approved_by": gate.approved_by,
        "requested_by": gate.requested_by,
        "age_seconds": round((now - gate.requested_at).total_seconds()),
        "level_deadline": gate.level_deadline.isoformat() if gate.level_deadline else None,
        "summary": gate.summary,
    }


async def cmd_pending(client: Client, args: argparse.Namespace) -> int:
    gates = []
    query = 'ExecutionStatus = "Running" AND RunbookGate = "waiting"'
    async for wf in client.list_workflows(query):
        status = await query_status(client.get_workflow_handle(wf.id, run_id=wf.run_id))
        if status.pending_gate:
            gates.append(status)
    now = datetime.now(UTC)
    rows = [
        pending_row(s.workflow_id, s.procedure, s.pending_gate, now)
        for s in gates
        if s.pending_gate
    ]
    rows.sort(key=lambda row: -row["age_seconds"])  # oldest first
    text = "\n".join(
        f"{r['workflow_id']}  {r['severity']}  {r['level']} (may decide: "
        f"{', '.join(r['may_decide'])})  waiting {r['age_seconds']}s  {r['summary']}"
        for r in rows
    )
    emit(args, {"pending": rows}, text or "no gate is waiting")
    return 0


# ---- wiring -------------------------------------------------------------------------------


async def connect() -> Client:
    try:
        return await temporal_client()
    except RuntimeError as err:
        address = os.environ.get("TEMPORAL_ADDRESS", "localhost:7233")
        raise Unreachable(
            f"cannot reach Temporal at {address} ({err}); is the stack up? (runbook stack up)"
        ) from None


def with_client(
    fn: Callable[[Client, argparse.Namespace], Coroutine[Any, Any, int]],
    validate: Callable[[argparse.Namespace], object] | None = None,
) -> Callable[[argparse.Namespace], int]:
    """Bad input is refused before anything is contacted."""

    def run(args: argparse.Namespace) -> int:
        if validate:
            validate(args)

        async def go() -> int:
            return await fn(await connect(), args)

        return asyncio.run(go())

    return run


# The commands defined here; the others' modules (demos, stack, incidents, webhook, schedules)
# are imported only when one of them, or the full help, is asked for: the demos alone import
# boto3 and more, about half a second of every `runbook start` (bench/to_gate.py).
CORE_COMMANDS = ("start", "approve", "reject", "sign", "status", "pending")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runbook", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    start = sub.add_parser("start", help="start a procedure")
    start.add_argument("procedure", choices=sorted(PROCEDURES))
    start.add_argument("--severity", choices=SEVERITIES, default="P1")
    start.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    start.add_argument("--dry-run", action="store_true")
    start.add_argument("--requested-by", default=default_user())
    start.add_argument("--json", action="store_true")
    start.set_defaults(func=with_client(cmd_start, check_start_args))

    approve = sub.add_parser("approve", help="approve the waiting gate")
    approve.add_argument("workflow_id")
    approve.add_argument("--as", dest="as_", required=True, metavar="NAME")
    approve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    approve.add_argument("--comment", default="")
    approve.add_argument("--json", action="store_true")
    approve.set_defaults(func=with_client(cmd_approve, check_decision_args))

    reject = sub.add_parser("reject", help="reject the waiting gate")
    reject.add_argument("workflow_id")
    reject.add_argument("--as", dest="as_", required=True, metavar="NAME")
    reject.add_argument("--reason", required=True)
    reject.add_argument("--json", action="store_true")
    reject.set_defaults(func=with_client(cmd_reject, approver_key))

    signer = sub.add_parser("sign", help="print a signed decision for the Temporal CLI or UI")
    signer.add_argument("workflow_id")
    signer.add_argument("--as", dest="as_", required=True, metavar="NAME")
    signer.add_argument("--reject", action="store_true")
    signer.add_argument("--reason", default="")
    signer.add_argument("--comment", default="")
    signer.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    signer.set_defaults(func=with_client(cmd_sign, check_decision_args))

    status = sub.add_parser("status", help="a run's phase, gate and timeline")
    status.add_argument("workflow_id")
    status.add_argument("--json", action="store_true")
    status.add_argument("--wait", action="store_true", help="wait until the run ends")
    status.set_defaults(func=with_client(cmd_status))

    pending = sub.add_parser("pending", help="every gate waiting for a human, oldest first")
    pending.add_argument("--json", action="store_true")
    pending.set_defaults(func=with_client(cmd_pending))

    if command in CORE_COMMANDS:
        return parser
    from starter import demo, incidents_cli, schedules, stack_cli
    from starter.webhook import cli as webhook_cli

    stack_cli.add_parser(sub)
    incidents_cli.add_parser(sub)
    demo.add_parser(sub)
    webhook_cli.add_parser(sub)
    schedules.add_parser(sub)
    return parser


def default_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "cli"


def main(argv: list[str] | None = None) -> int:
    from starter.stack_cli import load_stack_env

    load_stack_env()
    given = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in given if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        return int(args.func(args))
    except BadInput as err:
        print(f"runbook: error: {err}", file=sys.stderr)
        return 2
    except (Unreachable, psycopg.OperationalError) as err:
        print(f"runbook: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        print(f"runbook: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


def entry() -> None:
    """The console script. It leaves through os._exit: the Temporal client's native threads
    can abort a normal interpreter shutdown (temporalio/sdk-python issue 300)."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
