"""Slack end to end: signed clicks, modals and `/runbook` commands (sandbox/slack_client.py
acting as Slack) through the real intake over HTTP, against the real worker on the dev
server; the intake's answers read back from the sandbox's Slack twin."""

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from client.decisions import signed_start
from intake.app import WebhookConfig
from sandbox.slack_client import (
    ActingSlack,
    answers,
    block_actions,
    local_slack,
    signed_headers,
    slash_command,
)
from stack.roster import LOCAL_SLACK_IDS, local_key
from tests.conftest import free_ports, serving_webhook
from tests.e2e.conftest import cli, gate_open, replay_and_keep
from tests.temporal_env import eventually
from workflows.models import RunbookStatus
from workflows.registry import PROCEDURES

pytestmark = pytest.mark.timeout(300)
DB = "db-failover/production/prod-revenue-context-db"
BOB = LOCAL_SLACK_IDS["bob"]


@pytest.fixture
def sandbox(sandbox: httpx.Client) -> httpx.Client:
    sandbox.post("/control/heal-delay", json={"seconds": 2}).raise_for_status()
    return sandbox


class Slack:
    """Acting as Slack from the test's event loop (the intake and the worker run in it)."""

    def __init__(self, acting: ActingSlack, sandbox_url: str, client: Client) -> None:
        self.acting, self.sandbox_url, self.client = acting, sandbox_url, client

    async def click(self, person: str, action: str, workflow_id: str) -> httpx.Response:
        return await asyncio.to_thread(self.acting.click, person, action, workflow_id)

    async def submit(
        self, person: str, callback: str, workflow_id: str, values: dict[str, str]
    ) -> httpx.Response:
        return await asyncio.to_thread(self.acting.submit, person, callback, workflow_id, values)

    async def command(self, person: str, text: str) -> httpx.Response:
        return await asyncio.to_thread(self.acting.command, person, text)

    async def told(self, person: str, *words: str) -> str:
        """The first ephemeral message to `person` holding every one of `words`."""

        async def found() -> str | None:
            sent = await asyncio.to_thread(answers, self.sandbox_url, LOCAL_SLACK_IDS[person])
            return next((m["text"] for m in sent if all(w in m["text"] for w in words)), None)

        text: str = await eventually(found, f"a message to {person}: {words}", 90, 0.2)
        return text

    async def told_id(self, user_id: str) -> str:
        sent = await eventually(
            lambda: asyncio.to_thread(answers, self.sandbox_url, user_id), user_id, 60, 0.2
        )
        return str(sent[-1]["text"])

    async def calls(self, method: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.sandbox_url) as http:
            calls = (await http.get("/slack/api/calls")).json()
        return [c for c in calls if c["method"] == method]


@pytest.fixture
async def slack(worker: dict[str, str], dev_env: WorkflowEnvironment) -> AsyncIterator[Slack]:
    config = WebhookConfig.model_validate(worker)
    async with serving_webhook(config, dev_env.client) as url:
        acting = local_slack(url, Path(worker["RUNBOOK_STATE_DIR"]))
        yield Slack(acting, worker["SANDBOX_URL"], dev_env.client)
        acting.http.close()


async def status_of(handle: WorkflowHandle) -> RunbookStatus:
    return await handle.query("status", result_type=RunbookStatus)


async def start_unsigned(client: Client, worker: dict[str, str], severity: str) -> WorkflowHandle:
    procedure = PROCEDURES["db-failover"]
    inp = procedure.input_model.model_validate(
        {"severity": severity, "requested_by": "alice", "trigger": "cli", "poll_seconds": 0.5}
    )
    return await client.start_workflow(
        procedure.workflow_type, inp, id=DB, task_queue=worker["RUNBOOK_TASK_QUEUE"]
    )


async def test_slack_start_then_the_requester_is_refused_and_a_click_approves(
    worker: dict[str, str], sandbox: httpx.Client, slack: Slack
) -> None:
    sandbox.post("/control/incidents/db-failover").raise_for_status()
    ack = await slack.command("alice", "start db-failover P0 poll_seconds=0.5")
    assert ack.status_code == 200 and "working on it" in ack.json()["text"]
    assert DB in await slack.told("alice", "Started", "as alice")
    gate = (await gate_open(slack.client, DB)).pending_gate
    assert gate and gate.requester_proven and gate.requested_by == "alice"
    assert "for alice (Slack U0LALICE)" in gate.requester_detail

    assert (await slack.click("alice", "runbook.approve", DB)).status_code == 200
    assert "second person must decide" in await slack.told("alice", "Refused")
    assert (await slack.click("bob", "runbook.approve", DB)).status_code == 200
    await slack.told("bob", "approved by bob (via Slack)", DB)

    handle = slack.client.get_workflow_handle(DB)
    result = await handle.result()
    assert result["outcome"] == "completed"
    steps = {s["name"]: s for s in result["timeline"]}
    assert steps["gate failover approved"]["detail"] == f"by bob via slack ({BOB})"
    assert sandbox.get("/control/state").json()["failover_count"] == 1
    (message,) = [m for m in sandbox.get("/slack/api/messages").json() if not m["thread_ts"]]
    lines = [e["text"] for b in message["blocks"] if b["type"] == "context" for e in b["elements"]]
    assert lines[0] == f":white_check_mark: Approved by bob via slack ({BOB})"  # the click
    assert lines[-1].startswith(
        ":white_check_mark: Verified: db-failover done"
    )  # through to verified
    assert "runbook.approve" not in str(message["blocks"])  # the buttons are gone
    await replay_and_keep(slack.client, DB, "db_failover_slack")
    run_id = (await handle.describe()).run_id
    draft = await cli(worker, "postmortem", run_id[:13])  # the incident log says so too
    assert draft.returncode == 0 and f"by bob via slack ({BOB})" in draft.stdout, draft.stderr

    await slack.click("bob", "runbook.approve", DB)  # on the finished run
    assert "has finished (completed)" in await slack.told("bob", "Refused")


async def test_unproven_p1_needs_two_people_a_double_click_counts_once_and_a_reject_asks_why(
    worker: dict[str, str], sandbox: httpx.Client, slack: Slack
) -> None:
    sandbox.post("/control/incidents/db-failover").raise_for_status()
    handle = await start_unsigned(slack.client, worker, "P1")
    gate = (await gate_open(slack.client, DB)).pending_gate
    assert gate and gate.approvals_required == 2 and not gate.requester_proven

    # Two clicks at once by bob: one approval counts, the other is refused.
    clicks = await asyncio.gather(*(slack.click("bob", "runbook.approve", DB) for _ in range(2)))
    assert [c.status_code for c in clicks] == [200, 200]
    assert "another person must approve" in await slack.told("bob", "your approval counted")
    assert "already approved" in await slack.told("bob", "Refused")
    status = await status_of(handle)
    assert status.pending_gate and status.pending_gate.approved_by == ["bob"]
    # What is waiting, and this run's status, asked in Slack.
    helped = (await slack.command("erin", "help")).json()["text"]
    assert "/runbook pending" in helped
    await slack.command("erin", "pending")
    assert "P1 on-call" in await slack.told("erin", f"`{DB}`")
    await slack.command("erin", f"status {DB}")
    assert "awaiting approval" in await slack.told("erin", "```")

    # erin rejects: the button opens a modal asking why, the submission decides.
    await slack.click("erin", "runbook.reject", DB)

    async def modal() -> dict[str, Any] | None:
        opened = await slack.calls("views.open")
        return opened[-1]["body"]["view"] if opened else None

    view = await eventually(modal, "the reject modal", 60, 0.2)
    assert view["callback_id"] == "runbook.reject" and view["private_metadata"] == DB
    await slack.submit("erin", "runbook.reject", DB, {"reason": "replica lag too high"})
    await slack.told("erin", "rejected by erin", DB)
    result = await handle.result()
    assert result["outcome"] == "rejected"
    steps = {s["name"]: s for s in result["timeline"]}
    said = steps["gate failover rejected"]["detail"]
    assert said == f"by erin via slack ({LOCAL_SLACK_IDS['erin']}): replica lag too high"
    assert sandbox.get("/control/state").json()["failover_count"] == 0


async def test_an_escalated_gate_takes_a_click_from_its_level_only(
    worker: dict[str, str], sandbox: httpx.Client, slack: Slack
) -> None:
    sandbox.post("/control/incidents/db-failover").raise_for_status()
    # Ten seconds a level (a game-day worker honours it): on-call, then engineering-manager.
    await slack.command(
        "alice", "start db-failover P0 poll_seconds=0.5 approval_timeout_seconds=10"
    )
    await slack.told("alice", "Started", DB)
    handle = slack.client.get_workflow_handle(DB)

    async def escalated() -> bool:
        gate = (await status_of(handle)).pending_gate
        return bool(gate and gate.level == "engineering-manager")

    await eventually(escalated, "the gate escalated", 60, 0.2)
    await slack.click("bob", "runbook.approve", DB)
    assert "only engineering-manager, cto may decide" in await slack.told("bob", "Refused")
    await slack.click("erin", "runbook.approve", DB)
    await slack.told("erin", "approved by erin", DB)
    assert (await handle.result())["outcome"] == "completed"


async def test_a_gate_asking_for_numbers_opens_a_modal_with_bounds_and_checks_them(
    worker: dict[str, str], sandbox: httpx.Client, slack: Slack
) -> None:
    sandbox.post("/control/incidents/llm-budget").raise_for_status()
    sandbox.post("/control/llm", json={"cost_per_call": 0.1}).raise_for_status()
    await slack.command("alice", "start llm-budget P2 watch_minutes=0.1 watch_interval_seconds=2")
    workflow_id = "llm-budget/production/prod/revenue-context/config"
    await slack.told("alice", "Started", workflow_id)
    assert (await gate_open(slack.client, workflow_id)).pending_gate

    await slack.click("bob", "runbook.approve", workflow_id)

    async def modal() -> dict[str, Any] | None:
        opened = await slack.calls("views.open")
        return next((c["body"]["view"] for c in opened if "daily_budget" in str(c)), None)

    view = await eventually(modal, "the parameters modal", 60, 0.2)
    assert view["callback_id"] == "runbook.approve"
    field = next(b for b in view["blocks"] if b.get("block_id") == "daily_budget")
    assert "1 to 500" in field["label"]["text"] and field["element"]["initial_value"] == "200"

    await slack.submit("bob", "runbook.approve", workflow_id, {"daily_budget": "900"})
    assert "allowed: 1 to 500" in await slack.told("bob", "Refused")
    await slack.submit("bob", "runbook.approve", workflow_id, {"daily_budget": "150"})
    await slack.told("bob", "approved by bob", workflow_id)
    result = await slack.client.get_workflow_handle(workflow_id).result()
    assert result["decision"]["params"] == {"daily_budget": "150"}


async def test_bad_requests_start_and_decide_nothing(
    worker: dict[str, str], sandbox: httpx.Client, slack: Slack, caplog: pytest.LogCaptureFixture
) -> None:
    resource = f"slack-bad-{time.monotonic_ns()}"
    acting = slack.acting
    body = slash_command(BOB, f"start db-failover P2 db_instance_id={resource}", "C1")
    secret = acting.signing_secret
    url = f"{acting.intake_url}/slack/commands"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    tampered = body.replace(b"P2", b"P0")
    stranger = slash_command("U0NOBODY", f"start db-failover db_instance_id={resource}", "C1")
    cases = {
        "no signature": (body, form, 401),
        "wrong signature": (body, signed_headers("not-the-secret", body), 401),
        "six minutes old": (body, signed_headers(secret, body, time.time() - 360), 401),
        "changed after signing": (tampered, signed_headers(secret, body), 401),
        "unknown Slack user": (stranger, signed_headers(secret, stranger), 403),
        "1 MB": (b"x" * 1_000_000, signed_headers(secret, b"x" * 1_000_000), 413),
    }
    caplog.set_level(logging.WARNING, "runbook.webhook")
    async with httpx.AsyncClient(timeout=30) as http:
        for name, (content, headers, status) in cases.items():
            answer = await http.post(url, content=content, headers=headers)
            assert answer.status_code == status, (name, answer.text)
        shapeless = urlencode(
            {"payload": json.dumps({"type": "block_actions", "user": {"id": BOB}, "actions": 1})}
        ).encode()
        for malformed, why in ((b"payload=%7Bnot-json", "payload"), (shapeless, "actions")):
            answer = await http.post(
                f"{acting.intake_url}/slack/interactions",
                content=malformed,
                headers=signed_headers(secret, malformed),
            )
            assert answer.status_code == 400 and why in answer.json()["error"]
    workflow_id = f"db-failover/production/{resource}"
    assert not [wf async for wf in slack.client.list_workflows(f'WorkflowId = "{workflow_id}"')]
    logged = caplog.text
    assert "refused 401" in logged and "refused 413" in logged and "refused 403" in logged
    assert resource not in logged and "v0=" not in logged  # neither body nor signature
    assert "not on the runbook roster" in await slack.told_id("U0NOBODY")


class Valve:
    """A TCP relay to Temporal that can be shut: bytes then go nowhere, as when the network
    stops, so the intake behind it is caught between Slack's request and its Update."""

    def __init__(self, target: str) -> None:
        self.host, port = target.rsplit(":", 1)
        self.target_port = int(port)
        self.open = asyncio.Event()
        self.open.set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> "Valve":
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        self.server.close()
        for task in self.tasks:
            task.cancel()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self.tasks.add(task)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                await self.open.wait()
                sink.write(data)
                await sink.drain()
        sink.close()


@contextlib.asynccontextmanager
async def intake_process(env: dict[str, str], temporal: str) -> AsyncIterator[str]:
    """The intake as the stack runs it (`python -m intake`), in its own process."""
    port = free_ports(("webhook",))["webhook"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "intake",
        "--port",
        str(port),
        env={**env, "TEMPORAL_ADDRESS": temporal, "RUNBOOK_LOCAL_STACK": "1"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:

            async def up() -> bool:
                assert proc.returncode is None, "the intake exited"
                return (await http.get(f"{url}/health")).status_code == 200

            await eventually(up, "the intake process", 60, 0.2)
        yield url
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_a_retried_click_after_the_intake_crashed_decides_once(
    worker: dict[str, str], sandbox: httpx.Client, slack: Slack, dev_env: WorkflowEnvironment
) -> None:
    sandbox.post("/control/incidents/db-failover").raise_for_status()
    procedure = PROCEDURES["db-failover"]
    inp = procedure.input_model.model_validate(
        {"severity": "P2", "requested_by": "alice", "trigger": "cli", "poll_seconds": 0.5}
    )
    key = local_key(Path(worker["RUNBOOK_STATE_DIR"]), "alice")
    handle = await slack.client.start_workflow(
        procedure.workflow_type,
        signed_start(procedure, inp, key),
        id=DB,
        task_queue=worker["RUNBOOK_TASK_QUEUE"],
    )
    assert (await gate_open(slack.client, DB)).pending_gate
    # Slack's request, kept as sent: its retry carries the same body and signature.
    body = block_actions(BOB, "runbook.approve", DB, "C1")
    headers = signed_headers(slack.acting.signing_secret, body)
    target = dev_env.client.service_client.config.target_host

    async with Valve(target) as valve, intake_process(worker, f"127.0.0.1:{valve.port}") as url:
        valve.open.clear()
        async with httpx.AsyncClient() as http:
            answer = await http.post(f"{url}/slack/interactions", content=body, headers=headers)
        assert answer.status_code == 200  # acknowledged; the work was still to do
    # The intake is gone (killed on leaving), its Update never sent: nothing was decided.
    status = await status_of(handle)
    assert status.pending_gate and status.pending_gate.approved_by == []

    async with intake_process(worker, target) as url, httpx.AsyncClient() as http:
        for _ in range(2):  # Slack's retry, and one more
            answer = await http.post(f"{url}/slack/interactions", content=body, headers=headers)
            assert answer.status_code == 200
        await slack.told("bob", "approved by bob", DB)
        result = await handle.result()
    approvals = [s for s in result["timeline"] if s["name"] == "gate failover approved"]
    assert len(approvals) == 1 and result["outcome"] == "completed"
    assert sandbox.get("/control/state").json()["failover_count"] == 1
