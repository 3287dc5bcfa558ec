"""`runbook demo api-errors`: api is short of capacity and answers 503s; the runbook scales
it and the 5xx share falls."""

import httpx
from temporalio.client import Client

from client.render import render_status, run_link
from demos.narration import approve, control_state, follow, inject, say, start, until
from workflows.api_errors import ApiErrorsInput


async def demo_api_errors(client: Client, sandbox: httpx.AsyncClient) -> bool:
    say("Injecting the incident: api is short of capacity (tasks crashed, one unhealthy)")
    await inject(sandbox, "/control/incidents/api-errors", {"cause": "capacity"})
    share = (await control_state(sandbox, "/control/diagnosis"))["error_share"]
    print(f"    the service answers {share:.0%} of requests with 503")

    say("alice (on call) starts the api-errors runbook, severity P1")
    inp = ApiErrorsInput(
        requested_by="alice", trigger="cli", severity="P1", error_window_seconds=5, poll_seconds=1
    )
    handle = await start("api-errors", client, inp)
    say(
        "Diagnosing in parallel: ECS tasks, ERROR/CRITICAL logs, /health/detailed, RDS CPU, "
        "Redis INFO stats, circuit breakers, the 5xx share"
    )
    status = await until(handle, lambda s: s.pending_gate is not None)
    if status.pending_gate is None:
        print(render_status(status, "RUNNING"))
        return False
    shown = await approve(handle, status)

    say("Scaling api, waiting for the tasks, measuring the 5xx share until it falls")
    result = await follow(handle, shown)
    state = await control_state(sandbox, "/control/diagnosis")
    say(
        f"Done: {result.outcome}. {state['running']['api']} api tasks; the service now answers "
        f"{state['error_share']:.1%} with 503"
    )
    print(f"    {result.summary}\n    {run_link(handle.id, handle.result_run_id or '')}")
    return result.outcome == "completed" and state["error_share"] < inp.error_rate_threshold
