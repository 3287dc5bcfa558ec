"""The worker and the intake fail fast, saying what to create, when the Temporal namespace or
one of the runbooks' search attributes is missing (instead of polling, then failing runs)."""

import asyncio
import os
import subprocess
import sys

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
