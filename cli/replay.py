"""`runbook replay [--since 7d] [--workflow-type TYPE]... [--task-queue Q] [--json]`: the
pre-deploy check. Downloads the histories of the namespace's runs started within `--since`,
and of every run still open whatever its age (a gate may wait for days), and replays them
against this checkout's workflow code. A line per history that no longer replays; exit 1 on
any: deploying this code would break those runs (add `workflow.patched`, see the README)."""

import argparse
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio.client import Client, WorkflowHistory

from cli.common import emit, with_client
from client.errors import BadInput
from workflows.replay import EVERY_WORKFLOW, replayer

SINCE = re.compile(r"^([1-9][0-9]{0,4})([mhd])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days"}
MAX_SINCE = timedelta(days=90)  # visibility keeps closed runs for the retention period only
MAX_RUNS = 100_000


def type_name(workflow: type) -> str:
    return str(getattr(workflow, "__temporal_workflow_definition").name)


def known_types(workflows: Sequence[type] = EVERY_WORKFLOW) -> list[str]:
    return sorted(type_name(w) for w in workflows)


def parse_since(text: str) -> timedelta:
    match = SINCE.match(text)
    since = timedelta(**{UNITS[match[2]]: int(match[1])}) if match else None
    if since is None or since > MAX_SINCE:
        raise BadInput(f"--since {text!r}: a number and m, h or d (e.g. 30m, 12h, 7d), at most 90d")
    return since


def validate(args: argparse.Namespace) -> None:
    parse_since(args.since)
    unknown = sorted(set(args.workflow_type or []) - set(known_types()))
    if unknown:
        allowed = ", ".join(known_types())
        raise BadInput(f"--workflow-type {', '.join(unknown)}: unknown; allowed: {allowed}")
    if args.task_queue is not None and not re.fullmatch(r"[\w.:/-]{1,200}", args.task_queue):
        raise BadInput("--task-queue: letters, digits and . _ : / - only, at most 200")
    if not 1 <= args.limit <= MAX_RUNS:
        raise BadInput(f"--limit {args.limit}: between 1 and {MAX_RUNS}")


def visibility_query(since: datetime, types: Sequence[str], task_queue: str | None) -> str:
    """Runs started since `since` or still open, of the given types (validated above: the
    names come from the code, the queue from a checked pattern)."""
    kinds = " OR ".join(f'WorkflowType = "{name}"' for name in types)
    query = f'(StartTime >= "{since.isoformat()}" OR ExecutionStatus = "Running") AND ({kinds})'
    return query + (f' AND TaskQueue = "{task_queue}"' if task_queue else "")


@dataclass
class Report:
    replayed: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)


async def replay_namespace(
    client: Client,
    query: str,
    limit: int,
    workflows: Sequence[type] = EVERY_WORKFLOW,
) -> Report:
    """Replays every history `query` lists (up to `limit`) in one replaying worker."""

    async def histories() -> AsyncIterator[WorkflowHistory]:
        async for run in client.list_workflows(query, limit=limit):
            handle = client.get_workflow_handle(run.id, run_id=run.run_id)
            yield await handle.fetch_history()

    report = Report()
    async with replayer(workflows).workflow_replay_iterator(histories()) as results:
        async for result in results:
            report.replayed += 1
            if result.replay_failure is not None:
                report.failed.append(
                    {
                        "workflow_id": result.history.workflow_id,
                        "run_id": result.history.run_id,
                        "error": first_line(result.replay_failure),
                    }
                )
    return report


def first_line(err: Exception) -> str:
    text = str(err) or type(err).__name__
    return f"{type(err).__name__}: {text.splitlines()[0][:300]}"


async def cmd_replay(
    client: Client, args: argparse.Namespace, workflows: Sequence[type] = EVERY_WORKFLOW
) -> int:
    since = datetime.now(UTC) - parse_since(args.since)
    types = args.workflow_type or known_types(workflows)
    query = visibility_query(since, types, args.task_queue)
    report = await replay_namespace(client, query, args.limit, workflows)
    lines = [f"FAILED {f['workflow_id']} {f['run_id']}: {f['error']}" for f in report.failed]
    lines.append(
        f"{report.replayed} histories replayed (since {since:%Y-%m-%d %H:%M} UTC, and every "
        f"open run), {len(report.failed)} failed"
    )
    data = {"replayed": report.replayed, "failed": report.failed, "query": query}
    emit(args, data, "\n".join(lines))
    return 1 if report.failed else 0


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", default="7d", help="closed runs started within (30m, 12h, 7d)")
    parser.add_argument(
        "--workflow-type",
        action="append",
        metavar="TYPE",
        help=f"only these types (repeatable; default every type: {', '.join(known_types())})",
    )
    parser.add_argument("--task-queue", help="only runs of this task queue (an environment's)")
    parser.add_argument("--limit", type=int, default=10_000, help="at most this many runs")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=with_client(cmd_replay, validate))
