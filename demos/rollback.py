"""`runbook demo rollback`: a bad deploy (v1.5.0 fails its smoke tests, `/health` answers
503), the rollback runbook rolls every service back to the previous stable revision, and
`/health` reports the old version again."""

import httpx
from temporalio.client import Client

from demos.narration import approve, follow, inject, say, start, until
from workflows.models import RunbookResult
from workflows.rollback import RollbackInput


async def show_health(sandbox: httpx.AsyncClient) -> httpx.Response:
    health = await sandbox.get("/health")
    print(f"    GET /health -> {health.status_code} {health.text}")
    return health


async def demo_rollback(client: Client, sandbox: httpx.AsyncClient) -> bool:
    say("Injecting the incident: v1.5.0 was deployed to every service and fails its smoke tests")
    await inject(sandbox, "/control/incidents/rollback", {})
    await show_health(sandbox)

    say("alice (on call) starts rollback for production, severity P1, reason failed-smoke-tests")
    inp = RollbackInput(
        requested_by="alice",
        trigger="cli",
        severity="P1",
        reason="failed-smoke-tests",
        poll_seconds=1,
        verify_interval_seconds=2,
    )
    handle = await start("rollback", client, inp)
    say("Diagnosing in parallel: each service's task definition and its family's revisions")
    status = await until(handle, lambda s: s.pending_gate is not None)
    if status.pending_gate is None:
        print(f"    no gate opened: phase {status.phase}")
        return False
    shown = await approve(handle, status)

    say("Updating one service after the other, following each rollout, verifying /health")
    result: RunbookResult = await follow(handle, shown)
    say(f"Done: {result.outcome}. {result.summary}")
    health = await show_health(sandbox)
    return (
        result.outcome == "completed"
        and health.status_code == 200
        and health.json().get("version") == "v1.4.2"
    )
