"""`runbook demo [PROCEDURE|all]`: start the local stack, inject incidents, run the runbooks."""

import argparse
import asyncio
import os
import time

# The names only: the demos themselves are imported when one runs.
NAMES = (
    "db-failover",
    "kafka-lag",
    "api-errors",
    "triage",
    "llm-budget",
    "high-memory",
    "rollback",
    "cert-renewal",
)

# What a newcomer needs once the demo is over: the stack keeps running on purpose.
AFTER = """
The runs are in the Temporal UI: {ui}
The stack keeps running (Temporal, moto, PostgreSQL, Valkey, Kafka, sandbox, worker, webhook):
  runbook stack status     what runs where
  runbook sandbox reset    the sandbox as at start-up (no incident, Slack twin emptied)
  runbook demo all         every procedure's demo
  runbook stack down       stop it all (make clean also deletes its state, .runbook/)"""


def cmd_demo(args: argparse.Namespace) -> int:
    from client.env import load_stack_env
    from demos import DEMOS, run_demos
    from demos.narration import say
    from stack.local import local_stack

    if args.via == "slack" and args.procedure != "db-failover":
        print(f"--via slack: only the db-failover demo is decided in Slack, not {args.procedure}")
        return 2
    started = time.monotonic()
    say("Starting the embedded local stack (Temporal + UI, AWS, PostgreSQL, Redis, Kafka, ...)")
    stack = local_stack()
    stack.up()
    stack.write_env_file()
    load_stack_env()
    names = list(DEMOS) if args.procedure == "all" else [args.procedure]
    ok = asyncio.run(run_demos(names, args.via))
    print(f"\ndemo {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s")
    print(AFTER.format(ui=os.environ.get("TEMPORAL_UI_URL", "the Temporal UI")))
    return 0 if ok else 1


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("procedure", nargs="?", default="db-failover", choices=[*NAMES, "all"])
    parser.add_argument(
        "--via",
        choices=("cli", "slack"),
        default="cli",
        help="slack: start with /runbook and approve with the message's button (db-failover)",
    )
    parser.set_defaults(func=cmd_demo)
