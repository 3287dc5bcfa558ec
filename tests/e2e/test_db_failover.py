"""db-failover end to end on the Temporal dev server: the real worker and activities, the
sandbox, the CLI; bad input from the UI; an unanswered gate escalating."""

import json
import time

import httpx
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from tests.e2e.conftest import ROUTING_KEY, as_approver, cli, replay_and_keep
from tests.temporal_env import eventually

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def sandbox(sandbox: httpx.Client) -> httpx.Client:
    sandbox.post("/control/heal-delay", json={"seconds": 2}).raise_for_status()
    return sandbox


async def test_failover_started_and_approved_by_cli(
    worker: dict[str, str], sandbox: httpx.Client, dev_env: WorkflowEnvironment
) -> None:
    sandbox.post("/control/incidents/db-failover").raise_for_status()
    assert sandbox.get("/health/detailed").status_code == 503

    alice, bob = as_approver(worker, "alice"), as_approver(worker, "bob")
    started = await cli(  # signed with alice's key: her request, proven
        alice,
        "start",
        "db-failover",
        "--requested-by",
        "alice",
        "--set",
        "poll_seconds=0.5",
        "--json",
    )
    assert started.returncode == 0, started.stderr
    workflow_id = json.loads(started.stdout)["workflow_id"]
    assert workflow_id == "db-failover/production/prod-revenue-context-db"
    assert json.loads(started.stdout)["signed"] is True

    again = await cli(worker, "start", "db-failover", "--requested-by", "carol", "--json")
    assert json.loads(again.stdout)["run_id"] == json.loads(started.stdout)["run_id"]

    pending = await wait_until(worker, "pending")
    assert pending[0]["workflow_id"] == workflow_id and pending[0]["requested_by"] == "alice"
    gate = json.loads((await cli(worker, "status", workflow_id, "--json")).stdout)["pending_gate"]
    assert gate["requester_proven"] is True and gate["approvals_required"] == 1
    self_approval = await cli(alice, "approve", workflow_id, "--as", "alice")
    assert self_approval.returncode == 2 and "second person" in self_approval.stderr
    forged = await cli(bob, "approve", workflow_id, "--as", "erin")  # erin's name, bob's key
    assert forged.returncode == 2 and "signature does not match" in forged.stderr

    approved = await cli(bob, "approve", workflow_id, "--as", "bob", "--comment", "go")
    assert approved.returncode == 0, approved.stderr

    done = await cli(worker, "status", workflow_id, "--wait", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["state"] == "COMPLETED" and status["outcome"] == "completed"
    steps = {s["name"]: s for s in status["timeline"]}
    assert steps["reboot with force-failover"]["outcome"] == "ok"
    assert "us-east-1b" in steps["wait until available"]["detail"]
    assert steps["verify /health/detailed"]["outcome"] == "ok"
    assert steps["check idle-in-transaction sessions"]["detail"] == "0 idle in transaction"

    state = sandbox.get("/control/state").json()
    assert state["reboot_count"] == 1 and state["failover_count"] == 1
    assert sandbox.get("/health/detailed").status_code == 200
    kinds = [m["text"] for m in sandbox.get("/slack/messages").json()]
    assert any("approval needed" in k for k in kinds) and any("done" in k for k in kinds)

    closed = await cli(bob, "approve", workflow_id, "--as", "bob")
    assert closed.returncode == 2 and "no approval gate is open" in closed.stderr

    await check_incident_log(worker, status["run_id"], status["timeline"])
    await replay_and_keep(dev_env.client, workflow_id, "db_failover_e2e_approved")


async def check_incident_log(env: dict[str, str], run_id: str, timeline: list) -> None:
    """The run is in the incident log (its id is the run id: other tests' runs of the same
    workflow id may be there too), with a post-mortem draft (P1) the CLI can rewrite."""
    logged = next(s for s in timeline if s["name"] == "incident log")
    assert logged["outcome"] == "ok" and "post-mortem draft" in logged["detail"]
    listed = await cli(env, "incidents", "--json", "--procedure", "db-failover")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    [mine] = [i for i in data["incidents"] if i["incident_id"] == run_id]
    assert (mine["outcome"], mine["approvers"], mine["trigger"]) == ("completed", ["bob"], "cli")
    assert data["by_procedure"]["db-failover"]["mttr_minutes"] is not None
    draft = await cli(env, "postmortem", mine["incident_id"][:13])
    assert draft.returncode == 0, draft.stderr
    assert "Approved by: bob" in draft.stdout and "reboot with force-failover" in draft.stdout


async def test_an_unanswered_gate_escalates_and_each_level_is_notified(
    worker: dict[str, str], sandbox: httpx.Client, dev_env: WorkflowEnvironment
) -> None:
    started = await cli(
        worker,
        "start",
        "db-failover",
        "--severity",
        "P1",
        "--requested-by",
        "alice",
        "--set",
        "approval_timeout_seconds=1",
        "--json",
    )
    assert started.returncode == 0, started.stderr
    workflow_id = json.loads(started.stdout)["workflow_id"]
    done = json.loads((await cli(worker, "status", workflow_id, "--wait", "--json")).stdout)
    assert done["outcome"] == "not_approved"

    slack = [m["text"] for m in sandbox.get("/slack/messages").json()]
    assert "approval needed" in slack[0] and "on-call" not in slack[0]
    assert slack[1].startswith(":rotating_light: [P1] ESCALATED to engineering-manager")
    assert "not run" in slack[2]
    pages = sandbox.get("/pagerduty/events").json()
    assert [p["event_action"] for p in pages] == ["trigger", "trigger", "resolve"]
    assert {p["dedup_key"] for p in pages} == {f"{workflow_id}/failover"}
    assert all(p["routing_key"] == ROUTING_KEY for p in pages)
    history = await dev_env.client.get_workflow_handle(workflow_id).fetch_history()
    assert ROUTING_KEY not in history.to_json()  # the routing key stays in the worker


async def test_bad_input_from_the_ui_fails_the_run_naming_the_field(
    worker: dict[str, str], dev_env: WorkflowEnvironment
) -> None:
    handle = await dev_env.client.start_workflow(
        "DatabaseFailover",
        {"severity": "P9", "poll_seconds": -1},
        id=f"db-failover/bad-{time.monotonic_ns()}",
        task_queue=worker["RUNBOOK_TASK_QUEUE"],
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    message = str(failed.value.cause)
    assert "severity" in message and "'P0', 'P1', 'P2' or 'P3'" in message
    assert "poll_seconds" in message and "greater than 0" in message


async def test_cli_refuses_unknown_workflow(worker: dict[str, str]) -> None:
    result = await cli(worker, "status", "db-failover/no-such-db")
    assert result.returncode == 2 and "no workflow with id" in result.stderr


async def wait_until(env: dict[str, str], key: str) -> list[dict]:
    """`runbook pending --json` until it lists something (visibility is eventually consistent)."""

    async def listed() -> list[dict]:
        return list(json.loads((await cli(env, "pending", "--json")).stdout)[key])

    found: list[dict] = await eventually(listed, f"`runbook pending` to list {key}", 90, 0.3)
    return found
