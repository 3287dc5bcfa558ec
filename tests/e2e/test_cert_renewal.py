"""cert-renewal end to end on the Temporal dev server: the real worker and activities, the
sandbox's moto (ACM, ELBv2, Route 53), the CLI; moto's request recorder counts what reached
AWS."""

import json
import time

import boto3
import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tests.e2e.conftest import as_approver, cli, gate_open, replay_and_keep
from tests.reliability.harness import MotoRecorder
from workflows.cert_expiry_check import CertExpiryCheck, CertExpiryCheckInput

pytestmark = pytest.mark.timeout(240)
DOMAIN = "api.prod.revenue-context.com"


def served_certificate() -> str:
    elb = boto3.client("elbv2")
    [lb] = elb.describe_load_balancers(Names=["prod-revenue-context-alb"])["LoadBalancers"]
    listeners = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    [https] = [x for x in listeners if x["Protocol"] == "HTTPS"]
    return str(https["Certificates"][0]["CertificateArn"])


async def test_renewal_by_cli_swaps_the_listener_once(
    worker: dict[str, str],
    sandbox: httpx.Client,
    dev_env: WorkflowEnvironment,
    aws_env: dict[str, str],
) -> None:
    bad = await cli(worker, "start", "cert-renewal", "--set", "domain=not_a.domain!")
    assert bad.returncode == 2 and "domain: Value error, 'not_a.domain!' is not a DNS name" in (
        bad.stderr
    )
    old = served_certificate()
    recorder = MotoRecorder(aws_env["AWS_ENDPOINT_URL"])
    recorder.restart()
    started = await cli(
        worker,
        "start",
        "cert-renewal",
        "--severity",
        "P2",
        "--requested-by",
        "alice",
        "--set",
        "poll_seconds=1",
        "--json",
    )
    assert started.returncode == 0, started.stderr
    workflow_id = json.loads(started.stdout)["workflow_id"]
    assert workflow_id == f"cert-renewal/production/{DOMAIN}"
    status = await gate_open(dev_env.client, workflow_id)
    assert status.pending_gate, status
    assert "is ISSUED, valid until" in status.pending_gate.summary
    assert served_certificate() == old  # nothing a client sees has changed yet

    # The daily check finds the same expiring certificate: it joins this run.
    async def expiry_check() -> dict[str, str]:
        result = await dev_env.client.execute_workflow(
            CertExpiryCheck.run,
            CertExpiryCheckInput(),
            id=f"cert-expiry-check-{time.monotonic_ns()}",
            task_queue=worker["RUNBOOK_TASK_QUEUE"],
        )
        return dict(result.renewals)

    assert await expiry_check() == {DOMAIN: "signalled"}

    approved = await cli(as_approver(worker, "bob"), "approve", workflow_id, "--as", "bob")
    assert approved.returncode == 0, approved.stderr
    done = await cli(worker, "status", workflow_id, "--wait", "--json")
    final = json.loads(done.stdout)
    assert final["state"] == "COMPLETED" and final["outcome"] == "completed", done.stdout

    new = served_certificate()
    assert new != old
    described = boto3.client("acm").describe_certificate(CertificateArn=new)["Certificate"]
    assert described["Status"] == "ISSUED" and described["Type"] == "AMAZON_ISSUED"
    assert sandbox.get("/health/detailed").json()["tls"]["certificate_arn"] == new
    steps = {s["name"]: s for s in final["timeline"]}
    assert steps["listeners verified"]["outcome"] == "ok"
    actions = [call.action for call in recorder.calls()]
    recorder.stop()
    assert actions.count("RequestCertificate") == 1
    assert actions.count("ModifyListener") == 1
    assert actions.count("ChangeResourceRecordSets") == 1

    assert await expiry_check() == {}  # the new certificate is healthy: nothing to renew

    await replay_and_keep(dev_env.client, workflow_id, "cert_renewal_e2e")
