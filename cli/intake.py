"""`runbook webhook`: serve the intake (what `runbook stack up` starts as `webhook`)."""

import argparse
import os

DEFAULT_PORT = 8790


def cmd_webhook(args: argparse.Namespace) -> int:
    from intake.server import serve

    serve(args.host, args.port)
    return 0


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "webhook":
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument(
            "--port", type=int, default=int(os.environ.get("RUNBOOK_PORT_WEBHOOK") or DEFAULT_PORT)
        )
        parser.set_defaults(func=cmd_webhook)
