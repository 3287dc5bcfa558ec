"""`runbook demo triage`: an incident nobody has named yet; triage runs the runbook's Common
Commands in parallel, read-only, and names kafka-lag."""

import httpx
from temporalio.client import Client

from client.render import run_link
from demos.kafka_lag import KAFKA_INCIDENT, workers_health
from demos.narration import follow, inject, say, start
from workflows.triage import TriageInput


async def demo_triage(client: Client, sandbox: httpx.AsyncClient) -> bool:
    say("Injecting an incident without saying which: consumer lag on context-engine")
    await inject(sandbox, "/control/incidents/kafka-lag", KAFKA_INCIDENT)
    await workers_health(sandbox, 503)

    say("alice runs triage: the runbook's Common Commands in one parallel, read-only run")
    inp = TriageInput(requested_by="alice", trigger="cli", severity="P2")
    handle = await start("triage", client, inp)
    result = await follow(handle, set())
    say("Findings")
    for finding in result.findings:
        print(f"    {finding.verdict:<11} {finding.check}: {finding.summary[:110]}")
    say(f"Done: {result.summary}")
    for command in result.plan:
        print(f"    next: {command}")
    print(f"    {run_link(handle.id, handle.result_run_id or '')}")
    return result.outcome == "completed" and result.summary.startswith("Suggested: kafka-lag")
