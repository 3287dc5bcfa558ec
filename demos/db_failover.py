"""`runbook demo db-failover` (what `make demo` runs): the primary database is unhealthy;
alice starts the failover, bob approves, the database comes back in the other zone."""

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import httpx
from temporalio.client import Client

from activities.slack_app import APPROVE_ACTION, REJECT_ACTION
from client.render import render_status, run_link
from client.runs import query_status
from demos.narration import approve, follow, say, start, until
from sandbox.slack_client import local_slack
from settings import get_settings
from workflows.db_failover import DbFailoverInput


async def demo_db_failover(client: Client, sandbox: httpx.AsyncClient) -> bool:
    say("Resetting the sandbox and injecting the incident: the primary database is unhealthy")
    (await sandbox.post("/control/reset")).raise_for_status()
    (await sandbox.post("/control/incidents/db-failover")).raise_for_status()
    health = await sandbox.get("/health/detailed")
    print(f"    GET /health/detailed -> {health.status_code} {health.text[:160]}")

    say("alice (on call) starts the db-failover runbook, severity P1")
    inp = DbFailoverInput(requested_by="alice", trigger="cli", severity="P1", poll_seconds=2)
    handle = await start("db-failover", client, inp)

    say("Diagnosing in parallel: RDS status, connections, CPU, /health/detailed")
    status = await until(handle, lambda s: s.pending_gate is not None)
    if not status.pending_gate:
        print(render_status(status, "RUNNING"))
        return False
    shown = await approve(handle, status)

    say("Failing over, waiting for the new primary, verifying health and connection leaks")
    await follow(handle, shown)
    final = await query_status(handle)
    health = await sandbox.get("/health/detailed")
    say(f"Done: {final.outcome}. GET /health/detailed -> {health.status_code}")
    print(render_status(final, "COMPLETED"))
    print(run_link(handle.id, handle.result_run_id or ""))
    return final.outcome == "completed" and health.status_code == 200


async def demo_db_failover_via_slack(client: Client, sandbox: httpx.AsyncClient) -> bool:
    """The same incident decided where the page arrives: alice starts the runbook with
    `/runbook` in Slack, bob approves with the message's button, and the message follows the
    run to its end. The requests Slack would send are signed with the local Slack app's
    signing secret and posted to the intake (sandbox/slack_client.py); the app's messages go
    to the sandbox's Slack twin."""
    say("Resetting the sandbox and injecting the incident: the primary database is unhealthy")
    (await sandbox.post("/control/reset")).raise_for_status()
    (await sandbox.post("/control/incidents/db-failover")).raise_for_status()
    slack = local_slack(os.environ["RUNBOOK_WEBHOOK_URL"], get_settings().state_dir)

    text = "start db-failover P1 poll_seconds=2"
    say(f"alice (on call) types in Slack: /runbook {text}")
    acked = await asyncio.to_thread(slack.command, "alice", text)
    print(f"    intake -> Slack: HTTP {acked.status_code} {acked.json().get('text', '')}")
    answer = await told(sandbox, slack.slack_ids["alice"], "Started ")
    print(f"    Slack, to alice only: {answer}")
    if not answer.startswith("Started "):
        return False
    handle = client.get_workflow_handle(answer.split()[1])

    say("Diagnosing in parallel; the approval request goes to the channel with its buttons")
    status = await until(handle, lambda s: s.pending_gate is not None)
    message = await app_message(sandbox, lambda m: any(buttons(m)))
    if status.pending_gate is None or message is None:
        print(render_status(status, "RUNNING"))
        return False
    print(f"    Slack message: {message['text']}  [{' | '.join(buttons(message))}]")

    say("bob (a second person, on call) clicks Approve on his phone")
    clicked = await asyncio.to_thread(slack.click, "bob", APPROVE_ACTION, handle.id)
    print(f"    intake -> Slack: HTTP {clicked.status_code} (acknowledged; the decision follows)")
    say("Failing over; the message is updated in place as the run moves")
    seen: list[str] = []
    while (await query_status(handle)).phase not in ("done", "failed"):
        await show_updates(sandbox, seen)
        await asyncio.sleep(0.5)
    await show_updates(sandbox, seen)
    final = await query_status(handle)
    say(f"Done: {final.outcome}, approved in Slack")
    print(render_status(final, "COMPLETED"))
    print(run_link(handle.id, handle.result_run_id or ""))
    via_slack = any("via slack" in step.detail for step in final.timeline)
    verified = any("Verified:" in line for line in seen)
    return final.outcome == "completed" and via_slack and verified


async def told(sandbox: httpx.AsyncClient, user_id: str, prefix: str) -> str:
    """The app's ephemeral answer to `user_id` starting with `prefix` (or the last one)."""
    deadline = time.monotonic() + 60
    said: list[str] = []
    while time.monotonic() < deadline:
        calls = (await sandbox.get("/slack/api/calls")).json()
        said = [
            str(c["body"].get("text", ""))
            for c in calls
            if c["method"] == "chat.postEphemeral" and c["body"].get("user") == user_id
        ]
        if any(s.startswith(prefix) for s in said):
            return next(s for s in said if s.startswith(prefix))
        await asyncio.sleep(0.3)
    return said[-1] if said else "(no answer)"


async def app_message(
    sandbox: httpx.AsyncClient, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any] | None:
    """The run's top message in the Slack twin once `ready` holds for it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for message in (await sandbox.get("/slack/api/messages")).json():
            if message["thread_ts"] is None and ready(message):
                return dict(message)
        await asyncio.sleep(0.3)
    return None


def buttons(message: dict[str, Any]) -> list[str]:
    return [
        str(element["text"]["text"])
        for block in message.get("blocks", [])
        if block.get("type") == "actions"
        for element in block.get("elements", [])
        if element.get("action_id") in (APPROVE_ACTION, REJECT_ACTION)
    ]


def status_lines(message: dict[str, Any]) -> list[str]:
    """The message's run status: its context block's lines."""
    return [
        str(element.get("text", ""))
        for block in message.get("blocks", [])
        if block.get("type") == "context"
        for element in block.get("elements", [])
    ]


async def show_updates(sandbox: httpx.AsyncClient, seen: list[str]) -> None:
    """Print the status lines the top message gained since the last look."""
    message = await app_message(sandbox, lambda m: True)
    for line in status_lines(message or {}):
        if line not in seen:
            seen.append(line)
            print(f"    Slack message updated: {line}")
