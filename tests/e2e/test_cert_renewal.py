"""cert-renewal end to end on the Temporal dev server: the real worker and activities, the
sandbox's moto (ACM, ELBv2, Route 53), the CLI; moto's request recorder counts what reached
AWS."""

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import boto3
import httpx
import pytest
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from settings import Settings
from stack.roster import local_key
from tests.temporal_env import keep_history
from worker import INTERCEPTORS, build_worker
from workflows.cert_expiry_check import CertExpiryCheck, CertExpiryCheckInput
from workflows.models import RunbookStatus
from workflows.registry import WORKFLOWS

pytestmark = pytest.mark.timeout(240)
DOMAIN = "api.prod.revenue-context.com"


@pytest.fixture
async def worker(
    dev_env: WorkflowEnvironment, stack_env: dict[str, str], aws_env: dict[str, str]
) -> AsyncIterator[dict[str, str]]:
    """A real worker in this process; the environment the CLI needs to reach it."""
    env = {**stack_env, "RUNBOOK_TASK_QUEUE": f"e2e-cert-{time.monotonic_ns()}"}
    settings = Settings.model_validate(env)
    async with httpx.AsyncClient() as http, build_worker(dev_env.client, settings, http):
        target = dev_env.client.service_client.config.target_host
        yield {**os.environ, **env, "TEMPORAL_ADDRESS": target}


class Recorder:
    """moto's request log: which AWS actions reached it."""

    def __init__(self, endpoint: str) -> None:
        self.http = httpx.Client(base_url=endpoint, timeout=10)
        self.http.post("/moto-api/recorder/reset-recording").raise_for_status()
        self.http.post("/moto-api/recorder/start-recording").raise_for_status()

    def actions(self) -> list[str]:
        text = self.http.get("/moto-api/recorder/download-recording").text
        self.http.post("/moto-api/recorder/stop-recording")
        found = []
        for line in filter(None, text.splitlines()):
            entry = json.loads(line)
            headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
            if target := headers.get("x-amz-target"):  # JSON protocol (ACM)
                found.append(target.rpartition(".")[2])
                continue
            body = entry.get("body") or ""
            if entry.get("body_encoded"):
                body = base64.b64decode(body).decode(errors="replace")
            url = entry.get("url") or ""
            if "Action=" in body:  # query protocol (ELBv2)
                found.append(body.partition("Action=")[2].partition("&")[0])
            elif "/rrset" in url and entry.get("method") == "POST":  # REST (Route 53)
                found.append("ChangeResourceRecordSets")
        return found


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def wait_for_gate(handle: WorkflowHandle, timeout: float = 90) -> RunbookStatus:
    """By query (cheaper than a CLI process a poll on a busy machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await handle.query("status", result_type=RunbookStatus)
        if status.pending_gate or status.phase in ("done", "failed"):
            return status
        await asyncio.sleep(0.3)
    raise AssertionError(f"{handle.id}: no gate within {timeout}s")


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
    recorder = Recorder(aws_env["AWS_ENDPOINT_URL"])
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
    status = await wait_for_gate(dev_env.client.get_workflow_handle(workflow_id))
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

    bob = {**worker, "RUNBOOK_APPROVER_KEY": local_key(Path(worker["RUNBOOK_STATE_DIR"]), "bob")}
    approved = await cli(bob, "approve", workflow_id, "--as", "bob")
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
    actions = recorder.actions()
    assert actions.count("RequestCertificate") == 1
    assert actions.count("ModifyListener") == 1
    assert actions.count("ChangeResourceRecordSets") == 1

    assert await expiry_check() == {}  # the new certificate is healthy: nothing to renew

    history = await dev_env.client.get_workflow_handle(workflow_id).fetch_history()
    replayer = Replayer(
        workflows=WORKFLOWS, interceptors=INTERCEPTORS, data_converter=pydantic_data_converter
    )
    await replayer.replay_workflow(history)
    await keep_history(dev_env.client.get_workflow_handle(workflow_id), "cert_renewal_e2e")
