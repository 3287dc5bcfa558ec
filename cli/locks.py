"""`runbook locks [--json]`: the resource locks held now, and the runs waiting for each."""

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from activities.locks import LOCK_WORKFLOW, STATE_QUERY, LockState
from cli.common import emit, with_client

QUERY_TIMEOUT = timedelta(seconds=5)
RUNNING_LOCKS = f'WorkflowType = "{LOCK_WORKFLOW}" AND ExecutionStatus = "Running"'


def lock_row(lock_id: str, state: LockState, now: datetime) -> dict[str, Any]:
    holder = state.holder
    return {
        "lock": lock_id,
        "resource": state.resource,
        "environment": state.environment,
        "holder": None
        if holder is None
        else {
            "workflow_id": holder.request.workflow_id,
            "procedure": holder.request.procedure,
            "since": holder.granted_at.isoformat(),
            "held_seconds": round((now - holder.granted_at).total_seconds()),
            "lease_until": holder.lease_until.isoformat(),
        },
        "queue": [
            {
                "workflow_id": req.workflow_id,
                "procedure": req.procedure,
                "since": req.requested_at.isoformat(),
                "waiting_seconds": round((now - req.requested_at).total_seconds()),
            }
            for req in state.queue
        ],
    }


def lock_text(row: dict[str, Any]) -> str:
    holder = row["holder"]
    head = f"{row['environment']} {row['resource']}: "
    if holder:
        head += (
            f"held by {holder['workflow_id']} since {holder['since'][11:19]} UTC "
            f"({holder['held_seconds']}s; lease until {holder['lease_until'][11:19]} UTC)"
        )
    elif row.get("answering") is False:
        head += f"not answering within {QUERY_TIMEOUT.seconds}s (is a worker polling its queue?)"
    else:
        head += "being handed to the next in line"
    waits = [
        f"  {n}. {q['workflow_id']} waiting {q['waiting_seconds']}s"
        for n, q in enumerate(row["queue"], 1)
    ]
    return "\n".join([head, *waits])


async def cmd_locks(client: Client, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    ids: list[str] = []
    async for found in client.list_workflows(RUNNING_LOCKS):
        if found.id not in ids:
            ids.append(found.id)
    # Asked at once, each briefly: a lock whose task queue no worker polls cannot answer.
    states = await asyncio.gather(*(lock_state(client, lock) for lock in ids))
    rows = [
        lock_row(lock, state, now) if state else silent_row(lock)
        for lock, state in zip(ids, states, strict=True)
        if state is None or state.holder or state.queue
    ]
    rows.sort(key=lambda row: (row["environment"], row["resource"]))
    text = "\n".join(lock_text(row) for row in rows)
    emit(args, {"locks": rows}, text or "no lock is held")
    return 0


async def lock_state(client: Client, lock: str) -> LockState | None:
    """The latest run's state (a lock continues as new); None when it does not answer."""
    try:
        return await client.get_workflow_handle(lock).query(
            STATE_QUERY, result_type=LockState, rpc_timeout=QUERY_TIMEOUT
        )
    except (RPCError, WorkflowQueryFailedError):
        return None


def silent_row(lock: str) -> dict[str, Any]:
    """A running lock that did not answer: its environment's worker may be down."""
    environment, resource = "?", lock.removeprefix("lock/")
    return {
        "lock": lock,
        "resource": resource,
        "environment": environment,
        "holder": None,
        "queue": [],
        "answering": False,
    }


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=with_client(cmd_locks))
