"""api-errors hands off to high-memory end to end: the sandbox's tasks are OOM-killed, the
approver chooses `start=high-memory` at api-errors' gate, and the real worker starts the
high-memory run under its usual id, which reaches its own gate; a triage that names it starts
nothing twice (`runbook start --from`). Both runs are linked in the incident log."""

import json
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tests.e2e.conftest import as_approver, cli, gate_open
from tests.e2e.test_kafka_lag_api_errors_triage import FAST_API, finish, logged, start

pytestmark = pytest.mark.timeout(240)
API_ERRORS = "api-errors/production/api"
HIGH_MEMORY = "high-memory/production/api"


async def test_api_errors_hands_off_to_high_memory_which_reaches_its_own_gate(
    worker: dict[str, str], sandbox: httpx.Client, dev_env: WorkflowEnvironment
) -> None:
    sandbox.post("/control/incidents/high-memory").raise_for_status()
    assert await start(worker, "api-errors", *FAST_API) == API_ERRORS
    gate = (await gate_open(dev_env.client, API_ERRORS)).pending_gate
    assert gate is not None and gate.gate == "hand-off", gate
    assert gate.params[0].choices[0] == "high-memory" and "out of memory" in gate.summary
    bob = as_approver(worker, "bob")
    wrong = await cli(bob, "approve", API_ERRORS, "--as", "bob", "--set", "start=scale")
    assert wrong.returncode == 2 and "params.start: 'scale' is not offered" in wrong.stderr
    chose = await cli(bob, "approve", API_ERRORS, "--as", "bob", "--set", "start=high-memory")
    assert chose.returncode == 0, chose.stderr

    result = await finish(dev_env, API_ERRORS, "api_errors_e2e_handoff_high_memory")
    assert result.outcome == "completed" and f"high-memory started: {HIGH_MEMORY}" in result.summary
    # Its own run, at its own gate: the api-errors approval changed nothing.
    status = await gate_open(dev_env.client, HIGH_MEMORY)
    assert status.pending_gate and status.pending_gate.gate != "hand-off"
    assert status.pending_gate.requested_by == "bob"
    lines = {s.name: s.detail for s in status.timeline}
    assert lines["started by"] == f"hand-off from {API_ERRORS}"
    run_id = (await dev_env.client.get_workflow_handle(HIGH_MEMORY).describe()).run_id

    # A triage names high-memory too; starting what it named joins the running run.
    triage = await start(worker, "triage")
    done = await cli(worker, "status", triage, "--wait", "--json")
    assert done.returncode == 0, done.stderr
    alice = as_approver(worker, "alice")
    again = await cli(
        alice, "start", "--from", triage, "high-memory", "--requested-by", "alice", "--json"
    )
    assert again.returncode == 0, again.stderr
    joined: dict[str, Any] = json.loads(again.stdout)
    assert joined["workflow_id"] == HIGH_MEMORY and joined["joined"] is True, joined
    assert (await dev_env.client.get_workflow_handle(HIGH_MEMORY).describe()).run_id == run_id

    rejected = await cli(alice, "reject", HIGH_MEMORY, "--as", "alice", "--reason", "drill")
    assert rejected.returncode == 0, rejected.stderr
    await finish(dev_env, HIGH_MEMORY, "high_memory_e2e_started_by_api_errors")
    api_row = await logged(worker, "api-errors", API_ERRORS)
    assert api_row["started"] == [HIGH_MEMORY]
    hm_row = await logged(worker, "high-memory", HIGH_MEMORY)
    assert (hm_row["started_by"], hm_row["trigger"], hm_row["requested_by"]) == (
        API_ERRORS,
        "handoff",
        "bob",
    )
