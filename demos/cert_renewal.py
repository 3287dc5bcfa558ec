"""`runbook demo cert-renewal`: the ALB's HTTPS listener serves an imported certificate that
expires in 20 days (ACM never renews an imported one); the daily check (`CertExpiryCheck`,
what the `cert-expiry-check` schedule runs) starts cert-renewal, which obtains a new
certificate before asking, swaps it in after bob's approval, and `/health/detailed` reports
the new certificate."""

import time
from typing import Any

import httpx
from temporalio.client import Client, WorkflowHandle

from client.render import run_link
from client.runs import start_procedure
from demos.narration import approve, follow, say, until
from settings import get_settings
from stack.roster import local_key
from workflows.cert_expiry_check import CertExpiryCheck, CertExpiryCheckInput, CertExpiryCheckResult
from workflows.cert_renewal import CertRenewalInput
from workflows.registry import PROCEDURES


async def show_tls(sandbox: httpx.AsyncClient) -> dict[str, Any]:
    tls: dict[str, Any] = (await sandbox.get("/health/detailed")).json().get("tls") or {}
    print("    GET /health/detailed | .tls")
    for key in ("listener", "certificate_arn", "type", "renewal_eligibility", "days_left"):
        print(f"      {key}: {tls.get(key)}")
    return tls


async def expiry_check(client: Client) -> CertExpiryCheckResult:
    result: CertExpiryCheckResult = await client.execute_workflow(
        CertExpiryCheck.run,
        CertExpiryCheckInput(),
        id=f"cert-expiry-check-demo-{time.time_ns()}",
        task_queue=get_settings().task_queue,
    )
    for row in result.certificates:
        print(f"    {row.domain} on {', '.join(row.listeners)}: {row.verdict}, {row.reason}")
        if row.action != "none":
            print(f"      -> {row.action} {row.workflow_id}")
    return result


async def renewal(client: Client, result: CertExpiryCheckResult) -> WorkflowHandle | None:
    """The renewal the check started or joined; a person starts one if today's ran already."""
    row = next((r for r in result.certificates if r.workflow_id), None)
    if row is None:
        return None
    if row.action in ("started", "signalled"):
        return client.get_workflow_handle(row.workflow_id or "")
    say(f"A renewal of {row.domain} already ran today ({row.action}): alice starts one by hand")
    inp = CertRenewalInput(domain=row.domain, requested_by="alice", trigger="cli", severity="P2")
    key = local_key(get_settings().state_dir, "alice")
    return await start_procedure(client, PROCEDURES["cert-renewal"], inp, key=key)


async def demo_cert_renewal(client: Client, sandbox: httpx.AsyncClient) -> bool:
    say("The ALB serves an imported certificate 20 days from expiry; ACM never renews it")
    (await sandbox.post("/control/reset")).raise_for_status()
    before = await show_tls(sandbox)

    say("The daily cert-expiry-check runs (CertExpiryCheck, as its Temporal Schedule would)")
    handle = await renewal(client, await expiry_check(client))
    if handle is None:
        print("    no renewal started")
        return False
    desc = await handle.describe()
    print(f"    workflow {handle.id}\n    {run_link(handle.id, desc.run_id)}")

    say("Diagnosing; requesting the certificate, publishing its CNAME, waiting for ISSUED")
    status = await until(handle, lambda s: s.pending_gate is not None)
    if status.pending_gate is None:
        print(f"    no gate opened: phase {status.phase}")
        return False
    shown = await approve(handle, status)

    say("Swapping the listener's certificate, verifying the listener serves it")
    result = await follow(handle, shown)
    say(f"Done: {result.outcome}. {result.summary}")
    after = await show_tls(sandbox)

    say("The check again: the new certificate is ACM's own and renewed by ACM")
    again = await expiry_check(client)
    return (
        result.outcome == "completed"
        and bool(after.get("certificate_arn"))
        and after.get("certificate_arn") != before.get("certificate_arn")
        and after.get("renewal_eligibility") == "ELIGIBLE"
        and not again.renewals
    )
