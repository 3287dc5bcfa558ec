"""Rollback end to end by the CLI on the Temporal dev server: the real worker and activities,
the sandbox's bad deploy in moto, moto's recorder to count the updates that reached AWS."""

import asyncio
import contextlib
import json
import time
from collections import Counter

import httpx
import pytest
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from tests.reliability.harness import MotoRecorder
from tests.test_e2e_remediation import (  # noqa: F401  (fixtures)
    as_approver,
    cli,
    replay_and_keep,
    sandbox,
    worker,
)
from workflows.models import RunbookStatus

pytestmark = pytest.mark.timeout(240)
SERVICES = ("api", "context-engine", "orchestration-engine")


async def gate_of(handle: WorkflowHandle, timeout: float = 90) -> RunbookStatus:
    """The status once the gate is open (asked of Temporal here: a CLI process a poll
    would cost a second each on a busy machine)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(RPCError):
            status = await handle.query("status", result_type=RunbookStatus)
            if status.pending_gate or status.phase == "done" or time.monotonic() > deadline:
                return status
        await asyncio.sleep(0.2)


async def test_rollback_by_cli_updates_each_service_once_and_health_reports_the_target(
    worker: dict[str, str],  # noqa: F811
    sandbox: httpx.Client,  # noqa: F811
    dev_env: WorkflowEnvironment,
    aws_endpoint: str,
) -> None:
    sandbox.post("/control/incidents/rollback").raise_for_status()
    assert sandbox.get("/health").json()["version"] == "v1.5.0"
    recorder = MotoRecorder(aws_endpoint)
    recorder.restart()
    try:
        started = await cli(
            worker,
            *("start", "rollback", "--requested-by", "alice", "--json"),
            *("--set", "target=v1.4.2", "--set", "reason=failed-smoke-tests"),
            *("--set", "poll_seconds=0.5", "--set", "verify_interval_seconds=1"),
        )
        assert started.returncode == 0, started.stderr
        workflow_id = json.loads(started.stdout)["workflow_id"]
        assert workflow_id == "rollback/production"
        handle = dev_env.client.get_workflow_handle(workflow_id)
        status = await gate_of(handle)
        gate = status.pending_gate
        assert gate and "api: prod-api:" in gate.summary and "(v1.5.0) -> prod-api:" in gate.summary
        approved = await cli(as_approver(worker, "bob"), "approve", workflow_id, "--as", "bob")
        assert approved.returncode == 0, approved.stderr
        done = await cli(worker, "status", workflow_id, "--wait", "--json")
        updates = [c for c in recorder.calls() if c.action == "UpdateService"]
    finally:
        httpx.post(f"{aws_endpoint}/moto-api/recorder/stop-recording")
    final = json.loads(done.stdout)
    assert done.returncode == 0 and final["outcome"] == "completed", done.stdout
    assert Counter(c.params["service"] for c in updates) == dict.fromkeys(SERVICES, 1)
    health = sandbox.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok", "version": "v1.4.2"}
    steps = {s["name"]: s for s in final["timeline"]}
    assert all(steps[f"rollout {s}"]["detail"].split()[1] == "COMPLETED," for s in SERVICES)
    assert steps["verify health"]["outcome"] == "ok"
    await replay_and_keep(dev_env, workflow_id, "rollback_e2e_completed")
