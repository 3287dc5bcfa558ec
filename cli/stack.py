"""`runbook stack up|down|status`: the embedded local stack."""

from __future__ import annotations

import argparse
import json
import sys
import time


def cmd_stack(args: argparse.Namespace) -> int:
    from stack.local import StackError, local_stack

    stack = local_stack(iam=getattr(args, "iam", False))
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
    # An external part without an address (the UI of a configured Temporal) is not ours.
    down = [name for name, part in parts.items() if not part.up and part.address]
    if args.json:
        print(json.dumps({name: vars(part) for name, part in parts.items()}))
    else:
        for part in parts.values():
            state = "up" if part.up else "DOWN" if part.address else "-"
            pid = f"pid {part.pid}" if part.pid else ""
            print(f"{part.name:<15} {state:<5} {part.managed:<9} {part.address:<55} {pid}")
    if down:
        print(
            f"runbook: stack: {', '.join(down)} down; `runbook stack up` starts what is down "
            f"(logs in {stack.state_dir / 'logs'})",
            file=sys.stderr,
        )
    return 1 if down else 0


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "stack":
        parser.add_argument("action", choices=("up", "down", "status"))
        parser.add_argument("--json", action="store_true")
        parser.add_argument(
            "--iam",
            action="store_true",
            help="up: moto enforces deploy/iam/'s policies and the worker holds only them",
        )
        parser.set_defaults(func=cmd_stack)
