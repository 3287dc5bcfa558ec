"""`runbook sandbox reset|state`: the demo sandbox of the embedded stack, through its control
API (`POST /control/reset`, `GET /control/state`; the README lists every endpoint)."""

import argparse
import json
import os

import httpx

from client.errors import Unreachable


def cmd_sandbox(args: argparse.Namespace) -> int:
    base = os.environ.get("SANDBOX_URL")
    if not base:
        raise Unreachable("SANDBOX_URL is not set: run `runbook stack up` (it starts the sandbox)")
    method, path = (
        ("POST", "/control/reset") if args.action == "reset" else ("GET", "/control/state")
    )
    try:
        reply = httpx.request(method, base + path, timeout=30)
        reply.raise_for_status()
    except httpx.HTTPError as err:
        raise Unreachable(
            f"sandbox at {base}: {err}; is the stack up? (`runbook stack up`)"
        ) from None
    if args.json:
        print(json.dumps(reply.json()))
    elif args.action == "reset":
        print("sandbox reset: as at start-up (no incident; Slack and PagerDuty twins emptied)")
    else:
        print(json.dumps(reply.json(), indent=2))
    return 0


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "sandbox":
        parser.add_argument("action", choices=("reset", "state"))
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(func=cmd_sandbox)
