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
    "sign-start": ("cli.runs", "print a signed start input for the Temporal CLI or UI"),
    "approve": ("cli.runs", "approve the waiting gate"),
    "reject": ("cli.runs", "reject the waiting gate"),
    "sign": ("cli.runs", "print a signed decision for the Temporal CLI or UI"),
    "status": ("cli.runs", "a run's phase, gate and timeline"),
    "pending": ("cli.runs", "every gate waiting for a human, oldest first"),
    "locks": ("cli.locks", "resource locks held now and the runs waiting for them"),
    "incidents": ("cli.incidents", "the incident log, with MTTA and MTTR"),
    "postmortem": ("cli.incidents", "the post-mortem draft of an incident (stdout or --out FILE)"),
    "db": ("cli.incidents", "the runbook's own database"),
    "schedules": ("cli.schedules", "the runbooks' Temporal Schedules"),
    "stack": ("cli.stack", "the embedded local stack"),
    "demo": ("cli.demo", "inject an incident in the sandbox and run its runbook"),
    "sandbox": ("cli.sandbox", "the demo sandbox: reset it, or show its state"),
    "webhook": ("cli.intake", "serve the alarm webhook (SNS, Alertmanager)"),
    "replay": ("cli.replay", "replay the namespace's recent and open runs against this code"),
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
    from temporalio.service import RPCError

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
    except RPCError as err:
        print(f"runbook: {temporal_trouble(err)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return quiet_broken_pipe()
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        print(f"runbook: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


def temporal_trouble(err: Exception) -> str:
    """What a failed call to Temporal means for the person at the terminal, and what to do."""
    from temporalio.service import RPCStatusCode

    status = getattr(err, "status", None)
    address = os.environ.get("TEMPORAL_ADDRESS", "localhost:7233")
    if status == RPCStatusCode.UNAVAILABLE:
        return f"Temporal at {address} does not answer ({err}); run `runbook stack up`"
    if status == RPCStatusCode.DEADLINE_EXCEEDED or "no poller" in str(err):
        return (
            f"no worker answered in time ({err}); is the worker up? `runbook stack status` "
            "shows each part, `runbook stack up` starts what is down"
        )
    return f"Temporal refused the call: {err}"


def quiet_broken_pipe() -> int:
    """The reader went away (`runbook status ... | head`): stop without a traceback or a
    message; stdout goes to /dev/null so the final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1


def entry() -> None:
    """The console script. It leaves through os._exit: the Temporal client's native threads
    can abort a normal interpreter shutdown (temporalio/sdk-python issue 300)."""
    code = main()
    from telemetry import flush_traces  # spans a traced command made (telemetry.py)

    flush_traces()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = quiet_broken_pipe()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
