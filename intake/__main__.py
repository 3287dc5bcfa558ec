"""`python -m intake --host H --port P`: how the local stack and the image run the intake."""

import argparse
import os
import sys

from client.env import load_stack_env
from intake.server import DEFAULT_PORT, serve

if __name__ == "__main__":
    load_stack_env()
    parser = argparse.ArgumentParser(prog="python -m intake")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("RUNBOOK_PORT_WEBHOOK") or DEFAULT_PORT)
    )
    args = parser.parse_args()
    serve(args.host, args.port)
    sys.exit(0)
