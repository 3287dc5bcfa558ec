"""Worker Deployment Versioning on the dev server, with the worker's own deployment config
(worker.deployment_config): a run started on version 1 stays pinned to it while version 2
is current and takes the new runs; approved meanwhile, it acts only once a version-1 worker
is back. Fake activities (the real ones: tests/activities), one set a version."""

import time
import uuid
from pathlib import Path

import pytest
from temporalio.api.workflowservice.v1 import SetWorkerDeploymentCurrentVersionRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import VersioningBehavior
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner

from settings import Settings
from tests.fakes.approvers import signed, write_roster
from tests.fakes.systems import FakeSystems
from tests.temporal_env import eventually, gate_open, running, start, until
from worker import deployment_config
from workflows.db_failover import DatabaseFailover, DbFailoverInput

pytestmark = pytest.mark.timeout(180)


def versioned(env: WorkflowEnvironment, name: str, build: str, fakes: FakeSystems, queue: str):  # type: ignore[no-untyped-def]
    settings = Settings.model_validate({"RUNBOOK_DEPLOYMENT_NAME": name, "RUNBOOK_BUILD_ID": build})
    return running(
        env,
        [DatabaseFailover],
        fakes.activities(),
        queue=queue,
        deployment_config=deployment_config(settings),
        workflow_runner=UnsandboxedWorkflowRunner(),
    )


async def make_current(client: Client, name: str, build: str) -> None:
    """As `temporal worker deployment set-current-version` does; the server knows a version
    once its worker has polled."""

    async def made() -> bool:
        request = SetWorkerDeploymentCurrentVersionRequest(
            namespace=client.namespace, deployment_name=name, build_id=build
        )
        await client.workflow_service.set_worker_deployment_current_version(request)
        return True

    await eventually(made, f"{name}.{build} to become current", 60, 0.3)


async def pinned_build(handle: WorkflowHandle) -> tuple[int, str]:
    info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
    return info.behavior, info.deployment_version.build_id


async def test_a_run_finishes_on_the_version_it_started_on(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client, roster = dev_env.client, write_roster(tmp_path)
    name, queue = f"runbook-{time.monotonic_ns()}", f"versioned-{uuid.uuid4()}"
    v1, v2 = FakeSystems(roster), FakeSystems(roster)
    async with versioned(dev_env, name, "1.0", v1, queue):
        await make_current(client, name, "1.0")
        old = await start(
            dev_env, queue, DbFailoverInput(requested_by="alice", db_instance_id=f"{queue}-old")
        )
        await until(old, gate_open)
        approval = await signed(old, "bob")  # signed now: a query needs the run's version
    async with versioned(dev_env, name, "2.0", v2, queue):
        await make_current(client, name, "2.0")
        new = await start(
            dev_env, queue, DbFailoverInput(requested_by="alice", db_instance_id=f"{queue}-new")
        )
        await until(new, gate_open)
        await old.signal("approve", approval)
        assert await pinned_build(old) == (VersioningBehavior.PINNED.value, "1.0")
        assert await pinned_build(new) == (VersioningBehavior.PINNED.value, "2.0")
        async with versioned(dev_env, name, "1.0", v1, queue):  # version 1 back: the run goes on
            assert (await old.result()).outcome == "completed"
        await new.terminate("test over")
    assert "force_failover" in v1.calls and "force_failover" not in v2.calls


def test_a_half_configured_version_is_refused() -> None:
    with pytest.raises(ValueError, match="set both, or neither"):
        deployment_config(Settings.model_validate({"RUNBOOK_BUILD_ID": "2.0"}))
    assert deployment_config(Settings.model_validate({})) is None
