"""P3 goes to the ticket queue, end to end: the real worker opens an issue on the sandbox's
GitHub twin (the local stack configures it), pages nobody, links the issue in the timeline
and the incident log, and its token reaches no history."""

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from sandbox import github
from tests.e2e.conftest import as_approver, cli, gate_open
from tests.e2e.test_kafka_lag_api_errors_triage import (
    FAST_LAG,
    KAFKA_INCIDENT,
    finish,
    logged,
    shows,
    start,
)
from tests.temporal_env import eventually
from workflows.models import RunbookStatus, Step

pytestmark = pytest.mark.timeout(180)


async def test_a_p3_gate_opens_one_ticket_and_pages_nobody(
    worker: dict[str, str], sandbox: httpx.Client, dev_env: WorkflowEnvironment
) -> None:
    sandbox.post("/control/incidents/kafka-lag", json=KAFKA_INCIDENT).raise_for_status()
    await shows(
        lambda: sandbox.get("/health/workers"), lambda r: r.status_code == 503, "workers failing"
    )
    workflow_id = await start(worker, "kafka-lag", *FAST_LAG, severity="P3")
    assert (await gate_open(dev_env.client, workflow_id)).pending_gate is not None
    handle = dev_env.client.get_workflow_handle(workflow_id)

    async def ticket_step() -> Step | None:
        status = await handle.query("status", result_type=RunbookStatus)
        return next((s for s in status.timeline if s.name == "ticket" and s.ended_at), None)

    step: Step = await eventually(ticket_step, "the ticket step", 60, 0.2)
    assert step.outcome == "ok" and f"{github.REPO}#" in step.detail, step.detail
    url = step.detail.split(": ")[-1]
    rejected = await cli(
        as_approver(worker, "bob"), "reject", workflow_id, "--as", "bob", "--reason", "next week"
    )
    assert rejected.returncode == 0, rejected.stderr
    result = await finish(dev_env, workflow_id, "kafka_lag_e2e_p3_ticket")
    assert result.outcome == "rejected"

    issues = sandbox.get(
        "/github/repos/company/incidents/issues",
        params={"state": "all", "per_page": 100},
        headers={"Authorization": f"Bearer {github.TOKEN}"},
    ).json()
    mine = [i for i in issues if workflow_id in i["body"] and i["html_url"] == url]
    assert len(mine) == 1 and "approval needed" in mine[0]["title"]
    assert not sandbox.get("/pagerduty/events").json()  # P3: nobody paged
    assert (await logged(worker, "kafka-lag", workflow_id))["ticket"] == url
    history = await dev_env.client.get_workflow_handle(workflow_id).fetch_history()
    assert github.TOKEN not in history.to_json()
