"""No secret value in a history or a log: the approvers' keys, the Slack webhook's token, the
PagerDuty routing key and the LLM config secret's other values, searched for in the stored
histories, every history on this suite's Temporal server, and every log of its runs (the
workers', the sandbox's, the server's, the CLI transcript, post-mortem drafts).

Run alone, it first makes an end-to-end failover of its own (Slack, PagerDuty, a signed
approval by the CLI), so it proves something; in the full suite the crash test's failover
did all that already, and the scan also sees the crash, fault and bad-input runs."""

import json
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import Reliability, queue_name
from tests.reliability.harness import run_cli
from tests.temporal_env import eventually
from workflows.models import RunbookResult, RunbookStatus

pytestmark = pytest.mark.timeout(300)
HISTORIES = Path(__file__).parent.parent / "histories"
LLM_SECRET = "prod/revenue-context/config"
BUDGET_KEY = "LLM_DAILY_BUDGET"


def hits(secrets: dict[str, str], texts: dict[str, str]) -> list[tuple[str, str]]:
    """(secret, where) for every secret value found in a text."""
    return [
        (name, where)
        for where, text in texts.items()
        for name, value in secrets.items()
        if value and value in text
    ]


def llm_secret_values(rel: Reliability) -> dict[str, str]:
    """The config secret's values other than the budget (the only key a runbook changes)."""
    sm = rel.aws("secretsmanager")
    data = json.loads(sm.get_secret_value(SecretId=LLM_SECRET)["SecretString"])
    return {
        f"{LLM_SECRET} {key}": str(value)
        for key, value in data.items()
        if key != BUDGET_KEY and len(str(value)) >= 8  # short values (a region) prove nothing
    }


async def failover_end_to_end(rel: Reliability) -> None:
    """A run that uses every secret: Slack and PagerDuty at the gate, a signed approval."""
    queue = queue_name("secrets")
    sandbox = httpx.Client(base_url=rel.sandbox_url, timeout=10)
    sandbox.post("/control/reset").raise_for_status()
    sandbox.post("/control/heal-delay", json={"seconds": 1}).raise_for_status()
    sandbox.post("/control/incidents/db-failover").raise_for_status()
    worker = rel.worker(queue).go()
    env = rel.cli_env(queue)
    started = await run_cli(  # signed with alice's key: her start is proven
        rel.cli_env(queue, approver="alice"), rel.transcript,
        "start", "db-failover", "--requested-by", "alice", "--json",
        "--set", "poll_seconds=0.2",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    workflow_id = json.loads(started.stdout)["workflow_id"]
    client = await rel.temporal.client()
    handle = client.get_workflow_handle(workflow_id, result_type=RunbookResult)

    async def gate_open() -> bool:
        status = await handle.query("status", result_type=RunbookStatus)
        return status.pending_gate is not None

    await eventually(gate_open, "the gate to open")
    approved = await run_cli(
        rel.cli_env(queue, approver="bob"), rel.transcript, "approve", workflow_id, "--as", "bob"
    )
    assert approved.returncode == 0, approved.stderr
    assert (await handle.result()).outcome == "completed"
    status = await run_cli(env, rel.transcript, "status", workflow_id, "--json")
    assert status.returncode == 0, status.stderr
    worker.stop()
    assert sandbox.get("/slack/messages").json(), "Slack was never called: nothing to leak"
    assert sandbox.get("/pagerduty/events").json(), "PagerDuty was never called"


async def secrets_already_used(rel: Reliability) -> bool:
    """A failover on this server that paged, told Slack and took a signed approval (the
    crash test's, in the full suite): its histories and logs are already there to scan."""
    client = await rel.temporal.client()
    query = "WorkflowType = 'DatabaseFailover' AND ExecutionStatus = 'Completed'"
    async for execution in client.list_workflows(query):
        handle = client.get_workflow_handle(
            execution.id, run_id=execution.run_id, result_type=RunbookResult
        )
        result = await handle.result()
        done = {s.name for s in result.timeline if s.outcome == "ok"}
        if {"notify approval_request", "page trigger"} <= done and result.decision:
            return True
    return False


async def all_histories(rel: Reliability) -> dict[str, str]:
    client = await rel.temporal.client()
    found = {}
    async for execution in client.list_workflows():
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        found[f"history {execution.id}"] = (await handle.fetch_history()).to_json()
    return found


def files(*roots: Path) -> dict[str, str]:
    return {
        str(path): path.read_text(errors="replace")
        for root in roots
        if root.exists()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in (".log", ".md", ".json", ".txt")
    }


async def test_no_secret_in_any_history_or_log(reliability: Reliability) -> None:
    rel = reliability
    if not await secrets_already_used(rel):  # run alone: make a run that uses them all
        await failover_end_to_end(rel)
    secrets = {**rel.secrets(), **llm_secret_values(rel)}
    logs = files(rel.state / "logs")
    histories = {**files(HISTORIES), **await all_histories(rel)}
    assert any("worker-" in where for where in logs) and len(histories) > len(files(HISTORIES))
    # The scan finds a secret where one is meant to be: the approvers' own keys file.
    keys_file = rel.state / "approver-keys.toml"
    assert len(hits(secrets, {str(keys_file): keys_file.read_text()})) == len(rel.approver_keys())

    assert hits(secrets, {**logs, **histories}) == []
