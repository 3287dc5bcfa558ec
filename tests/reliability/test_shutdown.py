"""Graceful shutdown: the real worker, as its own process, gets SIGTERM (a pod being stopped
in a rolling deploy) while a mutation runs, right after AWS answered. It stops polling, lets
the mutation finish and report, and exits 0; the next worker completes the run. The failover
reached AWS once and was not retried."""

import json

import httpx
import pytest

from tests.reliability.conftest import WORKER_ACCESS_KEY, Reliability, queue_name
from tests.reliability.harness import run_cli
from tests.temporal_env import eventually
from workflows.models import RunbookStatus

pytestmark = pytest.mark.timeout(300)
DB = "prod-revenue-context-db"


async def test_sigterm_mid_mutation_drains_and_the_next_worker_completes_the_run(
    reliability: Reliability,
) -> None:
    rel, queue = reliability, queue_name("shutdown-db")
    sandbox = httpx.Client(base_url=rel.sandbox_url, timeout=10)
    sandbox.post("/control/reset").raise_for_status()
    sandbox.post("/control/heal-delay", json={"seconds": 1}).raise_for_status()
    sandbox.post("/control/incidents/db-failover").raise_for_status()
    recorder = rel.recorder()
    recorder.restart()
    draining = rel.worker(
        queue, crash="term-after-call:rds.RebootDBInstance", RUNBOOK_SHUTDOWN_SECONDS="60"
    ).go()
    following = rel.worker(queue)  # spawned now, polls once the first has gone
    handle = await rel.start(queue, "db-failover", poll_seconds=0.2)

    async def gate_open() -> bool:
        status = await handle.query("status", result_type=RunbookStatus)
        return status.pending_gate is not None

    await eventually(gate_open, "the gate to open", 120)
    approved = await run_cli(
        rel.cli_env(queue, approver="bob"),
        rel.transcript,
        *("approve", handle.id, "--as", "bob", "--json"),
    )
    assert approved.returncode == 0, approved.stderr
    assert await draining.exited(120) == 0, draining.tail()
    assert "SIGTERM at after-call:rds.RebootDBInstance" in draining.tail(200)
    following.go()
    result = await handle.result()

    assert result.outcome == "completed", result.summary
    assert recorder.count("RebootDBInstance", WORKER_ACCESS_KEY, DBInstanceIdentifier=DB) == 1
    reboot = next(s for s in result.timeline if s.name == "reboot with force-failover")
    assert reboot.outcome == "ok" and "already" not in reboot.detail  # finished, not retried
    history = json.loads((await handle.fetch_history()).to_json())
    attempts = [
        e["activityTaskStartedEventAttributes"].get("attempt", 1)
        for e in history["events"]
        if "activityTaskStartedEventAttributes" in e
    ]
    assert attempts and max(attempts) == 1  # no activity of the run was retried
    following.stop()
