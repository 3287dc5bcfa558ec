"""`runbook demo kafka-lag`: 60 signals/s arrive and two context-engine workers take 25/s
each; the runbook scales context-engine and the sandbox's real consumers drain the lag."""

import asyncio
import time

import httpx
from temporalio.client import Client

from client.render import render_status, run_link
from demos.narration import approve, control_state, follow, inject, say, start, until
from workflows.kafka_lag import KafkaLagInput
from workflows.models import RunbookResult

# 2 context-engine workers take 50/s of the 60/s arriving: the lag grows until more run.
# (Modest rates: the sandbox's consumers share one Python process with everything else.)
KAFKA_INCIDENT = {
    "produce_per_second": 60,
    "per_worker_per_second": 25,
    "backlog": 1500,
    "dlq_messages": 25,
    "lag_threshold": 300,
}


async def workers_health(sandbox: httpx.AsyncClient, want: int, timeout: float = 60) -> int:
    """GET /health/workers until it answers `want` (the sandbox measures lag every second)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await sandbox.get("/health/workers")
        body = reply.json()
        if reply.status_code == want or time.monotonic() > deadline:
            print(
                f"    GET /health/workers -> {reply.status_code}: {body['lag']} behind, "
                f"{body['workers']} workers"
            )
            return reply.status_code
        await asyncio.sleep(1)


async def demo_kafka_lag(client: Client, sandbox: httpx.AsyncClient) -> bool:
    say("Injecting the incident: 60 signals/s arrive, 2 context-engine workers take 25/s each")
    await inject(sandbox, "/control/incidents/kafka-lag", KAFKA_INCIDENT)
    await workers_health(sandbox, 503)

    say("alice (on call) starts the kafka-lag runbook, severity P2 (as its alarm does)")
    inp = KafkaLagInput(
        requested_by="alice",
        trigger="cli",
        severity="P2",
        sample_seconds=2,
        settle_seconds=8,
        poll_seconds=1,
        drain_target_seconds=30,
    )
    handle = await start("kafka-lag", client, inp)
    say("Diagnosing in parallel: lag per partition, ECS, /health/workers, ERROR logs, the DLQ")
    status = await until(handle, lambda s: s.pending_gate is not None)
    if status.pending_gate is None:
        print(render_status(status, "RUNNING"))
        return False
    shown = await approve(handle, status)

    say("Scaling context-engine, waiting for the tasks, measuring the lag over the settle window")
    result = await follow(handle, shown)
    running = (await control_state(sandbox, "/control/diagnosis"))["running"]["context-engine"]
    say(f"{running} context-engine tasks run; the sandbox's consumers drain the backlog")
    await workers_health(sandbox, 200, timeout=45)
    now = (await control_state(sandbox, "/control/diagnosis"))["kafka"]["lag"]
    last = last_lag(result)
    say(f"Done: {result.outcome}. {result.summary}; {now} behind now")
    print(run_link(handle.id, handle.result_run_id or ""))
    return result.outcome == "completed" and "falling" in result.summary and now < last


def last_lag(result: RunbookResult) -> int:
    """The lag the run measured last (its "lag after <settle>s" step: "<n> behind, ...")."""
    [step] = [
        s
        for s in result.timeline
        if s.name.startswith("lag after ") and s.name != "lag after scaling"
    ]
    return int(step.detail.split()[0])
