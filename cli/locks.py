"""`runbook locks [--json]`: the resource locks held now, and the runs waiting for each."""

import argparse
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from activities.locks import LOCK_WORKFLOW, STATE_QUERY, LockState
from cli.common import emit, with_client

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
    else:
        head += "being handed to the next in line"
    waits = [
        f"  {n}. {q['workflow_id']} waiting {q['waiting_seconds']}s"
        for n, q in enumerate(row["queue"], 1)
    ]
    return "\n".join([head, *waits])


async def cmd_locks(client: Client, args: argparse.Namespace) -> int:
    rows = []
    now = datetime.now(UTC)
    seen: set[str] = set()
    async for found in client.list_workflows(RUNNING_LOCKS):
        if found.id in seen:
            continue
        seen.add(found.id)
        try:  # the latest run: a lock continues as new
            state = await client.get_workflow_handle(found.id).query(
                STATE_QUERY, result_type=LockState
            )
        except (RPCError, WorkflowQueryFailedError):
            continue  # it ended meanwhile: nothing held
        if state.holder or state.queue:
            rows.append(lock_row(found.id, state, now))
    rows.sort(key=lambda row: (row["environment"], row["resource"]))
    text = "\n".join(lock_text(row) for row in rows)
    emit(args, {"locks": rows}, text or "no lock is held")
    return 0


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=with_client(cmd_locks))
