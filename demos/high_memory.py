"""`runbook demo high-memory`: api needs more memory than its 2048 MiB tasks and ECS kills
them; bob approves a revision with 4096 MiB and the OOM kills stop."""

import httpx
from temporalio.client import Client

from demos.narration import approve, control_state, follow, inject, say, start, until
from workflows.high_memory import HighMemoryInput
from workflows.models import RunbookResult


async def demo_high_memory(client: Client, sandbox: httpx.AsyncClient) -> bool:
    say("Injecting the incident: api needs more memory than its 2048 MiB tasks; ECS kills them")
    await inject(sandbox, "/control/incidents/high-memory", {})
    before = await control_state(sandbox, "/control/remediation")
    api = before["services"]["api"]
    print(f"    api runs {api['image']} with {api['memory']} MiB; OOM kills: 3 stopped tasks")

    say("alice (on call) starts high-memory for api, severity P2")
    inp = HighMemoryInput(
        requested_by="alice", trigger="cli", severity="P2", verify_interval_seconds=5
    )
    handle = await start("high-memory", client, inp)
    say("Diagnosing in parallel: ECS service, MemoryUtilized (last hour), stopped tasks")
    status = await until(handle, lambda s: s.pending_gate is not None)
    if status.pending_gate is None:
        print(f"    no gate opened: phase {status.phase}")
        return False
    shown = await approve(handle, status)

    say("Registering the revision, updating the service, following the rollout, verifying")
    result: RunbookResult = await follow(handle, shown)
    after = (await control_state(sandbox, "/control/remediation"))["services"]["api"]
    say(f"Done: {result.outcome}. {result.summary}")
    print(f"    api now runs {after['image']} with {after['memory']} MiB")
    return result.outcome == "completed" and after["memory"] == 4096
