"""The shipped IAM policies enforced (`runbook stack up --iam`: moto checks every request
against deploy/iam/). The worker holds only the worker's identity, which may only assume the
runbook roles: a db-failover with its own mutate role fails over once; with a mutate role
whose policy lacks the reboot, the run fails with AccessDenied in its timeline and the
instance is untouched."""

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from sandbox.iam import ADMIN_KEYS
from settings import Settings
from stack.local import Stack
from stack.roster import local_key
from tests.conftest import embedded_environ, free_ports, state_dir
from tests.fakes.approvers import signed, start_run
from tests.temporal_env import gate_open, until
from worker import build_worker
from workflows.db_failover import DbFailoverInput
from workflows.models import RunbookStatus

pytestmark = pytest.mark.timeout(300)
ROLES = "arn:aws:iam::123456789012:role/runbook-"


@pytest.fixture(scope="module")
def iam_stack() -> Iterator[Stack]:
    path = state_dir("runbook-iam-stack-")
    stack = Stack(path, ports=free_ports(), environ=embedded_environ(), iam=True)
    try:
        stack.up(("sandbox", "aws"))
        yield stack
    finally:
        stack.down()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sandbox(iam_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=iam_stack.client_env()["SANDBOX_URL"], timeout=30) as client:
        client.post("/control/reset").raise_for_status()
        client.post("/control/heal-delay", json={"seconds": 1}).raise_for_status()
        yield client
        client.post("/control/reset")


async def failover(
    dev_env: WorkflowEnvironment,
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    **env: str,
) -> tuple[RunbookStatus, Any]:
    """A db-failover by the real worker holding the stack's IAM identity, approved by bob."""
    stack_env = {**stack.client_env(), "RUNBOOK_TASK_QUEUE": f"iam-{name}", **env}
    for key in (
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.setenv(key, stack_env[key])  # boto3's own chain, as in the image
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    settings = Settings.model_validate(stack_env)
    async with httpx.AsyncClient() as http, build_worker(dev_env.client, settings, http):
        state = Path(stack_env["RUNBOOK_STATE_DIR"])
        handle = await start_run(  # as alice's `runbook start`: signed with her key
            dev_env,
            DbFailoverInput(requested_by="alice", poll_seconds=0.5, health_timeout_seconds=60),
            stack_env["RUNBOOK_TASK_QUEUE"],
            key=local_key(state, "alice"),
        )
        await until(handle, gate_open, timeout=90)
        key = local_key(state, "bob")
        # The stack's database is healthy (no incident): a failover needs bob to say so.
        healthy = {"override": "healthy"}
        await handle.execute_update("approve", await signed(handle, "bob", key=key, params=healthy))
        outcome: Any
        try:
            outcome = await handle.result()
        except WorkflowFailureError as err:
            outcome = err
        return await handle.query("status", result_type=RunbookStatus), outcome


def primary_zone(stack: Stack) -> str:
    admin = boto3.client(
        "rds",
        endpoint_url=stack.client_env()["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=ADMIN_KEYS[0],
        aws_secret_access_key=ADMIN_KEYS[1],
    )
    [db] = admin.describe_db_instances(DBInstanceIdentifier="prod-revenue-context-db")[
        "DBInstances"
    ]
    return str(db["AvailabilityZone"])


async def test_an_action_outside_the_role_policy_is_denied_and_changes_nothing(
    iam_stack: Stack,
    sandbox: httpx.Client,
    dev_env: WorkflowEnvironment,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = primary_zone(iam_stack)
    # A mis-set role: every procedure would mutate with kafka-lag's (ecs:UpdateService only).
    status, outcome = await failover(
        dev_env,
        iam_stack,
        monkeypatch,
        "denied",
        RUNBOOK_AWS_MUTATE_ROLE_ARN=ROLES + "mutate-kafka-lag",
    )
    assert isinstance(outcome, WorkflowFailureError)
    step = next(s for s in status.timeline if s.name == "reboot with force-failover")
    assert step.outcome == "failed"
    assert step.detail.startswith(f"AccessDenied: for role {ROLES}mutate-kafka-lag: ")
    assert "is not authorized to perform: rds:RebootDBInstance" in step.detail
    assert sum(s.name == "reboot with force-failover" for s in status.timeline) == 1  # no retry
    assert sandbox.get("/control/state").json()["reboot_count"] == 0
    assert primary_zone(iam_stack) == before


async def test_the_shipped_policies_let_a_failover_through_once(
    iam_stack: Stack,
    sandbox: httpx.Client,
    dev_env: WorkflowEnvironment,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = primary_zone(iam_stack)
    _, result = await failover(dev_env, iam_stack, monkeypatch, "allowed")
    assert not isinstance(result, WorkflowFailureError), result
    assert result.outcome == "completed", result.summary
    findings = {f.check: f.verdict for f in result.findings}
    assert findings["rds instance"] != "unavailable"  # read with the read role
    assert findings["DatabaseConnections"] != "unavailable"  # CloudWatch too
    assert sandbox.get("/control/state").json()["reboot_count"] == 1
    assert primary_zone(iam_stack) != before


def test_the_worker_identity_alone_may_read_nothing(iam_stack: Stack) -> None:
    env = iam_stack.client_env()
    rds = boto3.client(
        "rds",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    with pytest.raises(rds.exceptions.ClientError, match="AccessDenied"):
        rds.describe_db_instances()
