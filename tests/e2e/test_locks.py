"""Two runbooks approved in the same second on one ECS service, end to end: a rollback and a
high-memory run on `api` (the on-call audit's case). The real worker takes the service's lock
for each; moto's recorder shows that only one of them changed the service, and the other,
once it had the lock, saw its approved plan no longer held and stopped."""

import asyncio

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.e2e.conftest import as_approver, cli, gate_open
from tests.reliability.harness import MotoRecorder
from workflows.models import RunbookResult, RunbookStatus

pytestmark = pytest.mark.timeout(240)
ROLLBACK = "rollback/production"
HIGH_MEMORY = "high-memory/production/api"
MUTATIONS = ("UpdateService", "RegisterTaskDefinition")


async def start(env: dict[str, str], *args: str) -> None:
    done = await cli(env, "start", *args, "--requested-by", "alice")
    assert done.returncode == 0, done.stderr


async def lock_steps(client: Client, workflow_id: str) -> list[str]:
    status = await client.get_workflow_handle(workflow_id).query(
        "status", result_type=RunbookStatus
    )
    return [f"{s.name}: {s.outcome}" for s in status.timeline if "lock" in s.name]


async def test_two_runbooks_approved_at_once_on_one_service_never_both_change_it(
    worker: dict[str, str],
    sandbox: httpx.Client,
    dev_env: WorkflowEnvironment,
    aws_endpoint: str,
) -> None:
    sandbox.post("/control/incidents/rollback", json={"services": ["api"]}).raise_for_status()
    sandbox.post("/control/incidents/high-memory").raise_for_status()
    await start(
        worker, "rollback", "--set", "services=api", "--set", "target=v1.4.2",
        "--set", "poll_seconds=0.5", "--set", "verify_interval_seconds=1",
    )  # fmt: skip
    await start(
        worker, "high-memory", "--set", "verify_checks=1", "--set", "verify_interval_seconds=1",
    )  # fmt: skip
    for workflow_id in (ROLLBACK, HIGH_MEMORY):
        assert (await gate_open(dev_env.client, workflow_id)).pending_gate, workflow_id

    recorder = MotoRecorder(aws_endpoint)
    recorder.restart()
    try:
        bob = as_approver(worker, "bob")
        approvals = await asyncio.gather(
            cli(bob, "approve", ROLLBACK, "--as", "bob"),
            cli(bob, "approve", HIGH_MEMORY, "--as", "bob"),
        )
        assert all(a.returncode == 0 for a in approvals), [a.stderr for a in approvals]
        results: list[RunbookResult] = await asyncio.gather(
            *(
                dev_env.client.get_workflow_handle(w, result_type=RunbookResult).result()
                for w in (ROLLBACK, HIGH_MEMORY)
            )
        )
        mutations = [c for c in recorder.calls() if c.action in MUTATIONS]
    finally:
        recorder.stop()

    outcomes = {w: r.outcome for w, r in zip((ROLLBACK, HIGH_MEMORY), results, strict=True)}
    [loser] = [w for w, outcome in outcomes.items() if outcome == "stale"]
    [winner] = [w for w in outcomes if w != loser]
    assert outcomes[winner] == "completed", results
    loser_result = results[(ROLLBACK, HIGH_MEMORY).index(loser)]
    assert loser_result.summary.startswith("Stale plan, nothing changed"), loser_result.summary
    # One change of the service: the winner's (high-memory also registers its revision).
    updates = [c for c in mutations if c.action == "UpdateService"]
    assert [c.params["service"] for c in updates] == ["api"], mutations
    registered = [c for c in mutations if c.action == "RegisterTaskDefinition"]
    assert len(registered) == (1 if winner == HIGH_MEMORY else 0), mutations
    # Both took the lock and let it go; the loser only after its re-read.
    for workflow_id in (ROLLBACK, HIGH_MEMORY):
        steps = await lock_steps(dev_env.client, workflow_id)
        assert any(s.startswith("lock ") for s in steps), (workflow_id, steps)
        assert any(s.startswith("unlock ") for s in steps), (workflow_id, steps)
