"""A Slack click to action: from the moment a roster person's Approve click reaches the
intake to the first mutating activity starting on the worker, and how fast the intake
acknowledges the click (Slack gives it 3 s).

    .venv/bin/python bench/slack_click.py [--runs 30] [--json PATH]

Its own stack on free ports: the real worker and the real intake (`python -m intake`) as
processes, posting to the sandbox's Slack twin. Each run: reset the sandbox and inject the
database incident, start db-failover as alice (signed), wait for the gate, then post bob's
click as Slack would (block_actions, signed with the local app's signing secret:
sandbox/slack_client.py). Acknowledged = the intake's HTTP answer came back; the action =
the history's ActivityTaskStarted of the first mutating activity (server time, same
machine). The run is then cancelled (its verify step is not measured).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx
from temporalio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from activities.slack_app import APPROVE_ACTION
from bench.common import Report, own_stack, percentile
from bench.runs import finish, inject, start, to_action, to_gate
from sandbox.slack_client import local_slack
from settings import temporal_client
from stack.roster import local_key
from workflows.registry import PROCEDURES

TARGET_ACTION_P99 = 0.3  # seconds, click accepted -> first mutating activity started
TARGET_ACK_P99 = 0.1  # seconds, click posted -> the intake's answer


async def one(
    client: Client, sandbox: httpx.AsyncClient, env: dict[str, str], alice: str
) -> tuple[float, float] | None:
    """(ack seconds, click -> action started seconds), or None when no action was seen."""
    await inject(sandbox, "db-failover")
    handle, t0 = await start(client, PROCEDURES["db-failover"], ["poll_seconds=1"], key=alice)
    if (await to_gate(handle, t0)).gate is None:
        return None
    slack = local_slack(env["RUNBOOK_WEBHOOK_URL"], Path(env["RUNBOOK_STATE_DIR"]))
    clicked = time.time()
    answer = await asyncio.to_thread(slack.click, "bob", APPROVE_ACTION, handle.id)
    acked = time.time() - clicked
    answer.raise_for_status()
    run = await to_action(handle)
    # Cancelled, not terminated: the run lets its lock go at once (a terminated holder's
    # lock waits for the lock's liveness check), so the next run's action does not wait.
    await handle.cancel()
    await finish(handle, quiet=True)
    if run.started is None or run.accepted_at is None:
        return None
    return acked, run.accepted_at + run.started - clicked


async def measure(runs: int, env: dict[str, str], report: Report) -> None:
    client = await temporal_client()
    alice = local_key(Path(env["RUNBOOK_STATE_DIR"]), "alice")
    acks: list[float] = []
    actions: list[float] = []
    async with httpx.AsyncClient(base_url=env["SANDBOX_URL"], timeout=30) as sandbox:
        await one(client, sandbox, env, alice)  # warm: the first click imports and connects
        for n in range(runs):
            measured = await one(client, sandbox, env, alice)
            if measured is None:
                report.note(f"run {n}: no gate or no action seen")
                continue
            acks.append(measured[0])
            actions.append(measured[1])
    if not actions:
        report.note("no run reached its action")
        return
    report.note(f"{len(actions)} clicks by bob on db-failover's Approve button")
    report.add("click -> intake acknowledged p50", percentile(acks, 50), "s")
    report.add("click -> intake acknowledged p99", percentile(acks, 99), "s", below=TARGET_ACK_P99)
    report.add("click -> first mutating activity started p50", percentile(actions, 50), "s")
    report.add(
        "click -> first mutating activity started p99",
        percentile(actions, 99),
        "s",
        below=TARGET_ACTION_P99,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    report = Report("slack click to action")
    started = time.monotonic()
    with own_stack("slack", ["worker", "webhook"]) as (_, env):
        asyncio.run(measure(args.runs, env, report))
    print(f"done in {time.monotonic() - started:.0f}s")
    report.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
