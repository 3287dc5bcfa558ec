"""`runbook demo db-failover` (what `make demo` runs): the primary database is unhealthy;
alice starts the failover, bob approves, the database comes back in the other zone."""

import httpx
from temporalio.client import Client

from client.render import render_status, run_link
from client.runs import query_status
from demos.narration import approve, follow, say, start, until
from workflows.db_failover import DbFailoverInput


async def demo_db_failover(client: Client, sandbox: httpx.AsyncClient) -> bool:
    say("Resetting the sandbox and injecting the incident: the primary database is unhealthy")
    (await sandbox.post("/control/reset")).raise_for_status()
    (await sandbox.post("/control/incidents/db-failover")).raise_for_status()
    health = await sandbox.get("/health/detailed")
    print(f"    GET /health/detailed -> {health.status_code} {health.text[:160]}")

    say("alice (on call) starts the db-failover runbook, severity P1")
    inp = DbFailoverInput(requested_by="alice", trigger="cli", severity="P1", poll_seconds=2)
    handle = await start("db-failover", client, inp)

    say("Diagnosing in parallel: RDS status, connections, CPU, /health/detailed")
    status = await until(handle, lambda s: s.pending_gate is not None)
    if not status.pending_gate:
        print(render_status(status, "RUNNING"))
        return False
    shown = await approve(handle, status)

    say("Failing over, waiting for the new primary, verifying health and connection leaks")
    await follow(handle, shown)
    final = await query_status(handle)
    health = await sandbox.get("/health/detailed")
    say(f"Done: {final.outcome}. GET /health/detailed -> {health.status_code}")
    print(render_status(final, "COMPLETED"))
    print(run_link(handle.id, handle.result_run_id or ""))
    return final.outcome == "completed" and health.status_code == 200
