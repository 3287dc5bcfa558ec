"""The worker and the intake fail fast, saying what to create, when the Temporal namespace or
one of the runbooks' search attributes is missing (instead of polling, then failing runs)."""

import asyncio
import json
import os
import re
import subprocess
import sys
import time

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.testing import WorkflowEnvironment

from settings import PROJECT_DIR
from tests.conftest import free_ports

pytestmark = pytest.mark.timeout(180)


async def start(dev_env: WorkflowEnvironment, namespace: str, *argv: str) -> tuple[int, str]:
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": namespace,
        "RUNBOOK_LOCAL_STACK": "1",
    }
    env.pop("RUNBOOK_DATABASE_URL", None)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, *argv],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stderr


@pytest.fixture(scope="module")
async def bare_namespace(dev_env: WorkflowEnvironment) -> str:
    """A namespace without the runbooks' search attributes."""
    name = "runbook-bare"
    await dev_env.client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=name, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    return name


async def test_the_worker_stops_at_a_missing_namespace(dev_env: WorkflowEnvironment) -> None:
    code, err = await start(dev_env, "no-such-namespace", "worker.py")
    assert code == 1
    assert "Temporal namespace 'no-such-namespace' does not exist: create it" in err


async def test_the_worker_stops_at_missing_search_attributes(
    dev_env: WorkflowEnvironment, bare_namespace: str
) -> None:
    code, err = await start(dev_env, bare_namespace, "worker.py")
    assert code == 1
    assert "lacks the search attributes RunbookProcedure, RunbookResource" in err
    assert "temporal operator search-attribute create --namespace runbook-bare" in err


async def test_the_intake_stops_at_missing_search_attributes(
    dev_env: WorkflowEnvironment, bare_namespace: str
) -> None:
    port = free_ports(("webhook",))["webhook"]
    code, err = await start(
        dev_env, bare_namespace, "-m", "intake", "--host", "127.0.0.1", "--port", str(port)
    )
    assert code != 0
    assert (
        "intake not started: Temporal namespace 'runbook-bare' lacks the search attributes" in err
    )


def healthcheck() -> list[str]:
    """The Dockerfile's HEALTHCHECK command."""
    dockerfile = (PROJECT_DIR / "Dockerfile").read_text()
    [command] = re.findall(r"^HEALTHCHECK .*?CMD (\[.*?\])$", dockerfile, re.MULTILINE | re.DOTALL)
    return [sys.executable if arg == "python" else arg for arg in json.loads(command)]


async def test_the_worker_serves_the_metrics_its_health_check_reads(
    dev_env: WorkflowEnvironment,
) -> None:
    port = free_ports(("webhook",))["webhook"]
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": "default",
        "RUNBOOK_METRICS_PORT": str(port),
        "RUNBOOK_TASK_QUEUE": f"metrics-{port}",
    }
    env.pop("RUNBOOK_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The image's own HEALTHCHECK command, pointed at this worker's port.
        health = {**os.environ, "RUNBOOK_HEALTH_URL": f"http://127.0.0.1:{port}/metrics"}
        deadline = time.monotonic() + 60
        while True:
            done = await asyncio.to_thread(
                subprocess.run, healthcheck(), env=health, capture_output=True, timeout=30
            )
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            assert proc.poll() is None, "the worker exited"
            await asyncio.sleep(0.2)
        assert done.returncode == 0, done.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
