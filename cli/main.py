"""`runbook`: start, decide on and follow runbooks; run the local stack and the demos.

Exit status: 0 on success, 2 on bad input (with a message naming what is wrong and what is
allowed), 1 on any other failure.
"""

import argparse
import importlib
import os
import sys

# Every command: the module that configures and runs it, and its one-line help. Only the
# module of the command asked for is imported, so `runbook --help` imports no client library
# and `runbook start` none of the stack, the demos or the intake.
COMMANDS: dict[str, tuple[str, str]] = {
    "start": ("cli.runs", "start a procedure"),
    "approve": ("cli.runs", "approve the waiting gate"),
    "reject": ("cli.runs", "reject the waiting gate"),
    "sign": ("cli.runs", "print a signed decision for the Temporal CLI or UI"),
    "status": ("cli.runs", "a run's phase, gate and timeline"),
    "pending": ("cli.runs", "every gate waiting for a human, oldest first"),
    "incidents": ("cli.incidents", "the incident log, with MTTA and MTTR"),
    "postmortem": ("cli.incidents", "the post-mortem draft of an incident (stdout or --out FILE)"),
    "db": ("cli.incidents", "the runbook's own database"),
    "schedules": ("cli.schedules", "the runbooks' Temporal Schedules"),
    "stack": ("cli.stack", "the embedded local stack"),
    "demo": ("cli.demo", "inject an incident in the sandbox and run its runbook"),
    "webhook": ("cli.intake", "serve the alarm webhook (SNS, Alertmanager)"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runbook", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).configure(name, command)
    return parser


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    args = build_parser(given).parse_args(given)
    # Imported after parsing: `--help` and a usage error need none of it.
    from client.env import load_stack_env
    from client.errors import BadInput, Unreachable

    load_stack_env()
    try:
        return int(args.func(args))
    except BadInput as err:
        print(f"runbook: error: {err}", file=sys.stderr)
        return 2
    except Unreachable as err:
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
