"""Crashes: the real worker, as its own process, killed by SIGKILL at every step boundary and
inside every mutating activity after AWS answered; the Temporal server killed and restarted
while a gate waits. Each run still completes, and every mutation reached AWS once.

Crash points are hooks of the test wrapper (`crashing_worker.py`): an outbound workflow
interceptor kills the worker as it schedules the next step's activity, a botocore
`after-call` handler kills it when AWS has answered a mutating call."""

import asyncio
import json
from datetime import UTC, datetime

import httpx
import pytest
from temporalio.client import Client

from tests.reliability.conftest import WORKER_ACCESS_KEY, Reliability, queue_name
from tests.reliability.crash_chain import CrashChain
from tests.reliability.harness import run_cli
from tests.temporal_env import eventually
from workflows.models import AlarmDelivery, RunbookResult, RunbookStatus

pytestmark = pytest.mark.timeout(900)

DB = "prod-revenue-context-db"
DB_FAILOVER_PLAN: list[str | None] = [
    "schedule:rds.describe_instance",  # started -> diagnose
    "schedule:approvals.plan_escalation",  # diagnosed -> gate
    "schedule:notify.slack",  # gate opened -> approval request
    "schedule:notify.pagerduty",  # Slack told -> page
    None,  # waits at the gate; the test kills it there and restarts Temporal
    "schedule:approvals.verify",  # the approval (an Update) arrives -> signature check
    "schedule:rds.force_failover",  # approved -> act
    "after-call:rds.RebootDBInstance",  # AWS rebooted, the activity has not completed
    "schedule:rds.wait_available",  # failover retried (not repeated) -> wait
    "schedule:health.wait_healthy",  # available -> verify health
    "schedule:postgres.idle_in_transaction",  # healthy -> leak check
    "schedule:notify.slack",  # checked -> resolved message
    "schedule:incidents.record",  # finished -> incident log
    None,  # runs to the end
]


async def status_of(client: Client, workflow_id: str) -> RunbookStatus:
    return await client.get_workflow_handle(workflow_id).query("status", result_type=RunbookStatus)


async def test_db_failover_survives_a_crash_at_every_step(reliability: Reliability) -> None:
    rel = reliability
    queue = queue_name("crash-db")
    sandbox = httpx.Client(base_url=rel.sandbox_url, timeout=10)
    sandbox.post("/control/reset").raise_for_status()
    sandbox.post("/control/heal-delay", json={"seconds": 1}).raise_for_status()
    sandbox.post("/control/incidents/db-failover").raise_for_status()
    recorder = rel.recorder()
    recorder.restart()
    chain = CrashChain(rel, queue, DB_FAILOVER_PLAN)
    client = await rel.temporal.client()

    first = asyncio.create_task(chain.crash_next("schedule:rds.describe_instance"))
    started = await run_cli(
        rel.cli_env(queue, approver="alice"),  # her key signs her start
        rel.transcript,
        *("start", "db-failover", "--requested-by", "alice", "--json"),
        *("--set", "poll_seconds=0.2"),
    )
    assert started.returncode == 0, started.stderr
    workflow_id = json.loads(started.stdout)["workflow_id"]
    await first
    for point in DB_FAILOVER_PLAN[1:4]:
        assert point
        await chain.crash_next(point)

    # The gate waits: kill the idle worker and deliver alarms with no worker up; then kill
    # and restart the Temporal server under the next worker. Nothing may be lost.
    idle = chain.release()

    async def paged() -> bool:
        status = await status_of(client, workflow_id)
        return status.pending_gate is not None and any(
            s.name == "page trigger" for s in status.timeline
        )

    await eventually(paged, "the gate to open and page")
    idle.kill()
    handle = client.get_workflow_handle(workflow_id)
    for _ in range(2):
        await handle.signal(
            "alarm",
            AlarmDelivery(source="cloudwatch", alarm="db-cpu-high", received_at=datetime.now(UTC)),
        )
    verify = chain.release()
    await eventually(lambda: status_of(client, workflow_id), "the next worker to answer")
    rel.temporal.kill()
    await asyncio.to_thread(rel.temporal.start)
    client = await rel.temporal.client()
    await eventually(lambda: status_of(client, workflow_id), "the worker to reconnect")

    # The approval arrives by Update; the worker dies while checking its signature.
    approve = asyncio.create_task(
        run_cli(
            rel.cli_env(queue, approver="bob"),
            rel.transcript,
            *("approve", workflow_id, "--as", "bob", "--comment", "go"),
        )
    )
    await chain.crashed(verify, "schedule:approvals.verify")
    for point in DB_FAILOVER_PLAN[6:13]:
        assert point
        await chain.crash_next(point)
    last = chain.release()
    handle = client.get_workflow_handle(workflow_id, result_type=RunbookResult)
    result = await handle.result()
    approved = await approve
    last.stop()

    assert approved.returncode == 0, approved.stderr
    assert result.outcome == "completed", result.summary
    assert chain.hit == chain.planned_points()
    assert recorder.count("RebootDBInstance", WORKER_ACCESS_KEY, DBInstanceIdentifier=DB) == 1
    state = sandbox.get("/control/state").json()
    assert (state["reboot_count"], state["failover_count"]) == (1, 1)
    steps = {s.name: s for s in result.timeline}
    assert "already" in steps["reboot with force-failover"].detail  # the retry did not reboot
    assert steps["alarm db-cpu-high ALARM"].detail.startswith("2x")
    assert result.decision and result.decision.approvers == ["bob"]
    texts = [m["text"] for m in sandbox.get("/slack/messages").json()]
    assert sum("approval needed" in t for t in texts) == 1
    assert sum("db-failover done" in t for t in texts) == 1
    pages = [p["event_action"] for p in sandbox.get("/pagerduty/events").json()]
    assert pages == ["trigger", "resolve"]
