"""`runbook schedules [list|apply|pause|resume]`: the runbooks' Temporal Schedules."""

import argparse

from temporalio.client import Client

from cli.common import emit, with_client
from client.errors import BadInput
from intake.schedules import BY_NAME, ScheduleRow, apply, rows, set_paused
from settings import UnknownEnvironment, get_settings


def render(found: list[ScheduleRow]) -> str:
    lines = []
    for row in found:
        if not row.applied:
            lines.append(f"{row.name:<18} not applied (runbook schedules apply)  {row.summary}")
            continue
        state = "paused" if row.paused else "active"
        nxt = (
            f"next {row.next_run:%Y-%m-%d %H:%M:%S} UTC" if row.next_run and not row.paused else ""
        )
        lines.append(f"{row.name:<18} {state:<7} {nxt:<30} {row.runs} runs  {row.summary}")
    return "\n".join(lines)


async def cmd_schedules(client: Client, args: argparse.Namespace) -> int:
    profile = get_settings().profile(args.env)
    if args.action == "apply":
        done = await apply(client, profile)
        emit(args, {"applied": done}, "\n".join(f"{k}: {v}" for k, v in done.items()))
        return 0
    if args.action in ("pause", "resume"):
        paused = args.action == "pause"
        note = args.note or f"{args.action}d by runbook CLI"
        await set_paused(client, args.name, profile.name, paused, note)
        emit(args, {"name": args.name, "paused": paused}, f"{args.name}: {args.action}d")
        return 0
    found = await rows(client, profile.name)
    emit(args, {"schedules": [r.model_dump(mode="json") for r in found]}, render(found))
    return 0


def validate(args: argparse.Namespace) -> None:
    try:
        get_settings().profile(args.env)
    except UnknownEnvironment as err:
        raise BadInput(f"--env: {err}") from None
    if args.action in ("pause", "resume") and not args.name:
        raise BadInput(
            f"schedules {args.action}: NAME is required; schedules: {', '.join(BY_NAME)}"
        )
    if args.action in ("list", "apply") and args.name:
        raise BadInput(f"schedules {args.action}: takes no NAME")


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "schedules":
        parser.add_argument(
            "action", nargs="?", default="list", choices=("list", "apply", "pause", "resume")
        )
        parser.add_argument("name", nargs="?", help="the schedule (pause, resume)")
        parser.add_argument("--note", default="", help="why (pause, resume)")
        parser.add_argument(
            "--env", metavar="ENVIRONMENT", help="default: RUNBOOK_ENV, else the first"
        )
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(func=with_client(cmd_schedules, validate))
