"""`python -m starter.webhook --port P`: how the local stack runs the webhook."""

import argparse
import sys

from starter.stack_cli import load_stack_env
from starter.webhook.cli import add_parser

if __name__ == "__main__":
    load_stack_env()
    parser = argparse.ArgumentParser(prog="python -m starter.webhook")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["webhook", *sys.argv[1:]])
    sys.exit(args.func(args))
