"""`runbook start | sign-start | approve | reject | sign | status | pending`: a run and its
gate. The user's own key (RUNBOOK_APPROVER_KEY) signs decisions and starts."""

import argparse
import contextlib
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError

from cli.common import emit, parse_sets, validation_message, with_client
from client.decisions import (
    approver_key,
    key_source,
    make_signed,
    requester_key,
    send_decision,
    signed_start,
)
from client.errors import BadInput
from client.render import pending_row, render_status, run_link
from client.runs import QUERY_TIMEOUT, existing, query_status, start_or_join
from settings import EnvironmentProfile, UnknownEnvironment, get_settings
from workflows.models import SEVERITIES, Approval, Rejection, RunbookInput

if TYPE_CHECKING:
    from activities.approvals import SlaRow
    from workflows.registry import Procedure

DEFAULT_SEVERITY = "P1"


def procedures() -> dict[str, "Procedure"]:
    """Only `start` and `sign-start` import the registry: every procedure's workflow module
    (0.09 s of CPU that approve, reject, status and pending do without)."""
    from workflows.registry import PROCEDURES

    return PROCEDURES


def chosen_environment(args: argparse.Namespace) -> EnvironmentProfile:
    try:
        return get_settings().profile(getattr(args, "env", None))
    except UnknownEnvironment as err:
        raise BadInput(f"--env: {err}") from None


def build_input(
    procedure: "Procedure", args: argparse.Namespace, trigger: str = "cli"
) -> RunbookInput:
    """The input: the environment's resource names, then `--set`, then the options."""
    from cli.inputs import input_values

    given = input_values(procedure.input_model, parse_sets(args.set))
    profile = chosen_environment(args)
    defaults = profile.input_defaults(procedure.name)
    values = {k: v for k, v in defaults.items() if k in procedure.input_model.model_fields}
    values.update(given)
    values.update(
        severity=args.severity or DEFAULT_SEVERITY,
        dry_run=args.dry_run,
        requested_by=args.requested_by,
        trigger=trigger,
        environment=profile.name,
    )
    try:
        return procedure.input_model.model_validate(values)
    except ValidationError as err:
        raise BadInput(validation_message(err)) from None


async def cmd_start(client: Client, args: argparse.Namespace) -> int:
    if args.from_ is not None:
        await named_by_triage(client, args)
    procedure = procedures()[args.procedure]
    inp = build_input(procedure, args)
    key = requester_key(args.requested_by)
    handle, started = await start_or_join(client, procedure, inp, key=key)
    if not started:
        return await joined(handle, args)
    workflow_id, run_id = handle.id, handle.result_run_id or ""
    signed = key is not None
    data = {
        "workflow_id": workflow_id,
        "run_id": run_id,
        "ui_url": run_link(workflow_id, run_id),
        "joined": False,
        "requested_by": args.requested_by,
        "signed": signed,
    }
    if signed:
        who = f"signed as {args.requested_by} (the worker checks it at the gate)"
    else:
        who = (
            f"not signed: no key for {args.requested_by!r} (RUNBOOK_APPROVER_KEY, or the local "
            "stack's keys file), so the requester is unproven and a P0/P1 gate needs two "
            "approvers"
        )
    emit(args, data, f"started {workflow_id} (run {run_id}), {who}\n{data['ui_url']}")
    return 0


def cmd_sign_start(args: argparse.Namespace) -> int:
    """The signed input for `temporal workflow start --input` (or the UI): good for the next
    run of its workflow id within ten minutes. Needs no connection."""
    procedure = procedures()[args.procedure]
    args.requested_by = args.as_
    inp = signed_start(
        procedure, build_input(procedure, args, trigger="ui"), approver_key(args.as_)
    )
    print(inp.model_dump_json(exclude_defaults=True))
    queue = chosen_environment(args).task_queue
    print(
        f"temporal workflow start --type {procedure.workflow_type} --task-queue "
        f"{queue} --workflow-id {procedure.workflow_id(inp)} --input '...'",
        file=sys.stderr,
    )
    return 0


async def joined(handle: WorkflowHandle, args: argparse.Namespace) -> int:
    """A run for the resource is in flight: never a second one. Say so, and refuse what it
    cannot honour (nothing was changed)."""
    status = await query_status(handle)
    run_id = handle.run_id or ""
    running = f"already running: {handle.id} run {run_id} ({status.severity}, phase {status.phase})"
    if args.dry_run:
        raise BadInput(
            f"--dry-run: {running}; a dry run cannot join a live run, nothing was changed "
            f"(follow it: runbook status {handle.id})"
        )
    if args.severity and args.severity != status.severity:
        raise BadInput(
            f"--severity {args.severity}: {running}; its severity cannot change, nothing was "
            f"changed (follow it: runbook status {handle.id})"
        )
    url = run_link(handle.id, run_id)
    data = {"workflow_id": handle.id, "run_id": run_id, "ui_url": url, "joined": True}
    data.update(severity=status.severity, phase=status.phase)
    kept = "; it keeps its own input (--set not applied)" if args.set else ""
    emit(
        args,
        data,
        f"already running: joined run {run_id} ({status.severity}, phase "
        f"{status.phase}){kept}\n{url}",
    )
    return 0


async def sign_decision(
    client: Client, args: argparse.Namespace, approve: bool
) -> Approval | Rejection:
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
        approver_key(args.as_),
        approve=approve,
        params=parse_sets(args.set) if approve else {},
        comment=getattr(args, "comment", ""),
        reason=getattr(args, "reason", ""),
    )


def check_start_args(args: argparse.Namespace) -> None:
    if args.from_ is None:
        if args.procedure is None:
            raise BadInput("procedure: name one, or start what a triage named: --from WORKFLOW_ID")
        build_input(procedures()[args.procedure], args)
    else:
        parse_sets(args.set)


async def named_by_triage(client: Client, args: argparse.Namespace) -> None:
    """`--from`: the procedure a finished triage run named (the first, or `procedure` among
    those named), with the `--set` values and severity of its command, into `args`. The
    start is then the person's own, signed like any `runbook start`."""
    handle = await existing(client, args.from_)
    desc = await handle.describe()
    if desc.workflow_type != procedures()["triage"].workflow_type:
        raise BadInput(f"--from: {args.from_!r} is a {desc.workflow_type} run, not a triage")
    if desc.status != WorkflowExecutionStatus.COMPLETED:
        state = desc.status.name.lower() if desc.status else "unknown"
        raise BadInput(f"--from: the triage {args.from_!r} is {state}, not completed")
    result = await handle.result(rpc_timeout=QUERY_TIMEOUT)
    commands = [parse_start(c) for c in (result.get("plan") or [])]
    named = [c for c in commands if c and (args.procedure in (None, c[0]))]
    if not named:
        what = f"{args.procedure}" if args.procedure else "any procedure"
        listed = ", ".join(c[0] for c in commands if c) or "none"
        raise BadInput(f"--from: the triage {args.from_!r} did not name {what} (named: {listed})")
    args.procedure, sets, severity = named[0]
    args.set = [*sets, *args.set]
    args.severity = args.severity or severity


def parse_start(command: str) -> tuple[str, list[str], str] | None:
    """A triage's `runbook start PROCEDURE [--set K=V]... --severity PX` (workflows/triage.py),
    or None for anything else."""
    words = command.split()
    if words[:2] != ["runbook", "start"] or len(words) < 3 or words[2] not in procedures():
        return None
    sets = [v for flag, v in zip(words[3::2], words[4::2], strict=False) if flag == "--set"]
    severity = next(
        (v for f, v in zip(words[3::2], words[4::2], strict=False) if f == "--severity"), ""
    )
    return words[2], sets, severity if severity in SEVERITIES else ""


def check_decision_args(args: argparse.Namespace) -> None:
    parse_sets(getattr(args, "set", []))
    approver_key(args.as_)


async def decide(client: Client, args: argparse.Namespace, approve: bool) -> int:
    handle = await existing(client, args.workflow_id)
    decision = await sign_decision(client, args, approve)
    try:
        ack = await send_decision(handle, decision)
    except WorkflowUpdateFailedError as err:
        refusal = f"{args.workflow_id}: {err.cause or err}"
        if "signature does not match" in refusal:
            refusal += f"; check the key: {key_source(args.as_)} must hold {args.as_}'s own key"
        raise BadInput(refusal) from None
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
    sla = response_times()
    text = (
        (text or "no gate is waiting")
        + "\nResponse times (SLA):\n"
        + "\n".join(f"  {row.text}" for row in sla)
    )
    emit(args, {"pending": rows, "sla": [row.model_dump() for row in sla]}, text)
    return 0


def response_times() -> list["SlaRow"]:
    """The worker's SLA as this machine's settings give it (the same variables)."""
    from activities.approvals import EscalationPolicy, business_hours, sla_table

    settings = get_settings()
    policy = EscalationPolicy(
        response_minutes=settings.response_minutes,
        business_hours=business_hours(settings.business_hours),
        timezone=settings.business_timezone,
    )
    return sla_table(policy)


def default_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "cli"


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "start":
        from cli.inputs import set_keys_help

        parser.epilog = set_keys_help()
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.add_argument("procedure", nargs="?", choices=sorted(procedures()))
        parser.add_argument(
            "--from",
            dest="from_",
            metavar="TRIAGE_WORKFLOW_ID",
            help="start what a finished triage run named (the first, or PROCEDURE among them)",
        )
        parser.add_argument(
            "--severity", choices=SEVERITIES, help=f"default {DEFAULT_SEVERITY} for a new run"
        )
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--requested-by", default=default_user())
        parser.add_argument(
            "--env",
            metavar="ENVIRONMENT",
            help="the environment to act in (default: RUNBOOK_ENV, else the first of "
            "RUNBOOK_ENVIRONMENTS)",
        )
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(func=with_client(cmd_start, check_start_args))
    elif name == "sign-start":
        parser.add_argument("procedure", choices=sorted(procedures()))
        parser.add_argument("--as", dest="as_", required=True, metavar="NAME")
        parser.add_argument("--severity", choices=SEVERITIES, default="P1")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--env", metavar="ENVIRONMENT", help="as for runbook start")
        parser.set_defaults(func=cmd_sign_start)
    elif name == "approve":
        parser.add_argument("workflow_id")
        parser.add_argument("--as", dest="as_", required=True, metavar="NAME")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        parser.add_argument("--comment", default="")
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(func=with_client(cmd_approve, check_decision_args))
    elif name == "reject":
        parser.add_argument("workflow_id")
        parser.add_argument("--as", dest="as_", required=True, metavar="NAME")
        parser.add_argument("--reason", required=True)
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(func=with_client(cmd_reject, check_decision_args))
    elif name == "sign":
        parser.add_argument("workflow_id")
        parser.add_argument("--as", dest="as_", required=True, metavar="NAME")
        parser.add_argument("--reject", action="store_true")
        parser.add_argument("--reason", default="")
        parser.add_argument("--comment", default="")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        parser.set_defaults(func=with_client(cmd_sign, check_decision_args))
    elif name == "status":
        parser.add_argument("workflow_id")
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--wait", action="store_true", help="wait until the run ends")
        parser.set_defaults(func=with_client(cmd_status))
    elif name == "pending":
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(func=with_client(cmd_pending))
