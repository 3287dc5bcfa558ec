"""A gate's approval request outlives a Slack outage, and never holds the gate: the real
worker and notify activities against the sandbox's Slack, made to fail and healed."""

import json

import httpx
import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from tests.e2e.conftest import as_approver, cli
from tests.temporal_env import keep_history, until
from workflows.models import RunbookStatus, Step

pytestmark = pytest.mark.timeout(240)
REQUEST = "notify approval_request"


async def open_gate(env: dict[str, str], client_env: WorkflowEnvironment) -> WorkflowHandle:
    started = await cli(
        env,
        "start",
        "db-failover",
        "--requested-by",
        "alice",
        "--set",
        "approval_timeout_seconds=600",
        "--json",
    )
    assert started.returncode == 0, started.stderr
    return client_env.client.get_workflow_handle(json.loads(started.stdout)["workflow_id"])


def lines(status: RunbookStatus, name: str) -> list[Step]:
    return [s for s in status.timeline if s.name == name]


def paged(status: RunbookStatus) -> bool:
    return [p.outcome for p in lines(status, "page trigger")] == ["ok"]


def failed_and(then: str):  # type: ignore[no-untyped-def]
    """The status once the approval request's failure line says `then`."""
    return lambda s: any(
        then in line.detail and line.outcome == "failed" for line in lines(s, REQUEST)
    )


async def test_an_approval_request_outlives_a_slack_outage_and_never_holds_the_gate(
    worker: dict[str, str], sandbox: httpx.Client, dev_env: WorkflowEnvironment
) -> None:
    bob = as_approver(worker, "bob")
    sandbox.post("/control/slack/fail", json={"status": 500}).raise_for_status()

    # Slack heals while the gate waits: the request arrives, the timeline says it failed first.
    handle = await open_gate(worker, dev_env)
    # The page is not held up by Slack: delivered while Slack still fails.
    await until(handle, lambda s: failed_and("retrying until")(s) and paged(s), 90)
    sandbox.post("/control/slack/fail", json={"status": 200}).raise_for_status()
    status = await until(handle, lambda s: any(x.outcome == "ok" for x in lines(s, REQUEST)), 90)
    failed, delivered = lines(status, REQUEST)
    assert failed.outcome == "failed" and "answered 500" in failed.detail
    assert delivered.outcome == "ok" and "failed attempts" in delivered.detail
    messages = [m["text"] for m in sandbox.get("/slack/messages").json()]
    assert sum("approval needed" in m for m in messages) == 1
    rejected = await cli(bob, "reject", handle.id, "--as", "bob", "--reason", "drill")
    assert rejected.returncode == 0, rejected.stderr
    await handle.result()  # closed: the next start is a new run
    await keep_history(handle, "db_failover_e2e_slack_healed_during_the_gate")

    # Still failing when the gate decides: the decision is taken, the request given up.
    sandbox.post("/control/slack/fail", json={"status": 500}).raise_for_status()
    handle = await open_gate(worker, dev_env)
    await until(handle, failed_and("retrying until"), 90)
    rejected = await cli(bob, "reject", handle.id, "--as", "bob", "--reason", "drill")
    assert rejected.returncode == 0, rejected.stderr
    status = await until(handle, failed_and("the gate moved on"), 90)
    assert any(x.name == "gate failover rejected" for x in status.timeline)
    sandbox.post("/control/slack/fail", json={"status": 200}).raise_for_status()
    status = await until(handle, lambda s: s.phase == "done", 90)
    assert status.outcome == "rejected"
    assert not any(x.outcome == "ok" for x in lines(status, REQUEST))
    await handle.result()
    await keep_history(handle, "db_failover_e2e_slack_down_when_rejected")
