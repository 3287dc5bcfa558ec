"""`runbook stack up|down|status`: the embedded local stack."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

from settings import get_settings

if TYPE_CHECKING:
    from starter.stack import Stack


def local_stack() -> Stack:
    # Imported here: every `runbook` command calls load_stack_env below, and starter.stack
    # imports psycopg, redis and confluent-kafka, which `runbook start` does not need.
    from starter.stack import Stack

    return Stack(get_settings().state_dir)


def load_stack_env() -> None:
    """Let every command reach a stack that `runbook stack up` started, whatever its ports:
    its `<state>/env` fills in what the environment does not already say."""
    state_dir = Path(os.environ.get("RUNBOOK_STATE_DIR") or get_settings().state_dir)
    env_file = state_dir / "env"
    if not env_file.exists():
        return
    for line in env_file.read_text().splitlines():
        key, sep, value = line.removeprefix("export ").partition("=")
        if sep and key not in os.environ:
            os.environ[key] = shlex.split(value)[0] if value else ""
    get_settings.cache_clear()


def cmd_stack(args: argparse.Namespace) -> int:
    from starter.stack import StackError

    stack = local_stack()
    if args.action == "up":
        started = time.monotonic()
        try:
            stack.up()
        except StackError as err:
            print(f"runbook: stack: {err}")
            return 1
        env_file = stack.write_env_file()
        print(f"stack up in {time.monotonic() - started:.1f}s; `source {env_file}` for clients")
    elif args.action == "down":
        stack.down()
        (stack.state_dir / "env").unlink(missing_ok=True)
        print("stack down")
        return 0
    parts = stack.status()
    if args.json:
        print(json.dumps({name: vars(part) for name, part in parts.items()}))
    else:
        for part in parts.values():
            state = "up" if part.up else "DOWN"
            pid = f"pid {part.pid}" if part.pid else ""
            print(f"{part.name:<12} {state:<5} {part.managed:<9} {part.address:<55} {pid}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    stack = sub.add_parser("stack", help="the embedded local stack")
    stack.add_argument("action", choices=("up", "down", "status"))
    stack.add_argument("--json", action="store_true")
    stack.set_defaults(func=cmd_stack)
