"""The webhook as the stack runs it (its own process), and an alarm starting the real
db-failover workflow on the real worker."""

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from intake.app import WebhookConfig
from stack.local import Stack
from tests.conftest import embedded_environ, free_ports, serving_webhook, state_dir
from tests.temporal_env import eventually
from workflows.models import RunbookStatus

pytestmark = pytest.mark.timeout(180)

TOKEN = "e2e-token-7d2a"


@pytest.fixture(scope="module")
def webhook_stack() -> Iterator[Stack]:
    path = state_dir("runbook-test-webhook-")
    small = Stack(
        path, ports=free_ports(), environ={**embedded_environ(), "RUNBOOK_WEBHOOK_TOKEN": TOKEN}
    )
    try:
        small.up(["webhook"])
        yield small
    finally:
        small.down()
        shutil.rmtree(path, ignore_errors=True)


def test_the_stack_runs_the_webhook_as_a_part(webhook_stack: Stack) -> None:
    status = webhook_stack.status()["webhook"]
    assert status.up and status.managed == "embedded" and status.pid is not None
    url = webhook_stack.client_env()["RUNBOOK_WEBHOOK_URL"]
    assert url == status.address and url.endswith(f":{webhook_stack.port('webhook')}")
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    # The token reached the process: a wrong one is refused, the right one gets past auth.
    bad = httpx.post(f"{url}/alertmanager", headers={"Authorization": "Bearer x"}, content=b"{}")
    assert bad.status_code == 401
    good = httpx.post(
        f"{url}/alertmanager", headers={"Authorization": f"Bearer {TOKEN}"}, content=b"{}"
    )
    assert good.status_code == 400 and "bad Alertmanager payload" in good.json()["error"]


def test_an_external_webhook_is_not_started(tmp_path: object) -> None:
    environ = {**embedded_environ(), "RUNBOOK_WEBHOOK_URL": "http://127.0.0.1:1"}
    small = Stack(state_dir("runbook-test-webhook-ext-"), ports=free_ports(), environ=environ)
    try:
        status = small.status()["webhook"]
        assert status.managed == "external" and not status.up
        assert small._servers_for(["webhook"]) == []
    finally:
        shutil.rmtree(small.state_dir, ignore_errors=True)


async def test_alarm_starts_db_failover_once(
    dev_env: WorkflowEnvironment, worker: dict[str, str]
) -> None:
    config = WebhookConfig(
        token=TOKEN,
        task_queue=worker["RUNBOOK_TASK_QUEUE"],
        local_stack=True,
        coalesce_seconds=0.25,
    )
    instance = f"no-such-db-{time.monotonic_ns()}"
    since = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    alert = {
        "status": "firing",
        "labels": {"alertname": "db-cpu-high", "dbinstance_identifier": instance},
        "annotations": {"summary": "CPU 97%"},
        "startsAt": since,
    }
    payload = json.dumps({"version": "4", "status": "firing", "alerts": [alert]}).encode()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        serving_webhook(config, dev_env.client) as url,
        httpx.AsyncClient(base_url=url, timeout=90) as http,
    ):
        replies = await asyncio.gather(
            *(http.post("/alertmanager", content=payload, headers=headers) for _ in range(10))
        )
        assert {r.status_code for r in replies} == {202}
        actions = sorted(r.json()["alerts"][0]["action"] for r in replies)
        assert actions.count("started") == 1
        workflow_id = f"db-failover/production/{instance}"
        assert replies[0].json()["workflow_ids"] == [workflow_id]
        handle = dev_env.client.get_workflow_handle(workflow_id)
        result = await handle.result()
        # The sandbox does not know the instance: the runbook refuses, nothing is changed.
        assert result["outcome"] == "refused" and result["severity"] == "P1"
        status = await handle.query("status", result_type=RunbookStatus)
        started = next(s for s in status.timeline if s.name == "started")
        assert "by alarm:db-cpu-high via alarm" in started.detail
        line = next(s for s in status.timeline if s.name == "alarm db-cpu-high ALARM")
        # The first delivery started the run; the others were held and sent together (or at
        # once, after an interval), which the run took only if it had not ended (it refuses
        # at once).
        assert set(actions) <= {"started", "coalesced", "signalled"}
        counted = int(line.detail.split("x via alertmanager")[0])
        assert 1 <= counted <= 10, line.detail
        assert "CPU 97%" in line.detail
        await asyncio.sleep(0.5)  # past the coalescing interval (0.25 s): answered at once
        again = await http.post("/alertmanager", content=payload, headers=headers)
        assert again.json()["alerts"][0]["action"] == "suppressed"
        desc = await handle.describe()
        assert desc.status == WorkflowExecutionStatus.COMPLETED

        async def runs() -> int:
            return len(
                [wf async for wf in dev_env.client.list_workflows(f'WorkflowId = "{workflow_id}"')]
            )

        assert await eventually(runs, "the run in visibility") == 1  # eventually consistent
