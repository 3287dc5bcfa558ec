"""Scale-out: two worker processes on one task queue share 20 db-failover runs; one of them
is killed by SIGKILL right after AWS answered one of its reboots, with other actions of
its own in flight. Every run completes on the other worker, and every instance was rebooted
exactly once (moto's recorder, by each worker's own access key)."""

import asyncio
import time
from collections import Counter

import boto3
import httpx
import pytest
from temporalio.client import WorkflowHandle

from tests.fakes.approvers import signed
from tests.reliability.conftest import WORKER_ACCESS_KEY, Reliability, queue_name
from tests.reliability.harness import KILLED
from tests.temporal_env import eventually
from workflows.db_failover import DbFailoverInput
from workflows.models import RunbookResult, RunbookStatus
from workflows.registry import PROCEDURES

pytestmark = pytest.mark.timeout(600)
RUNS = 20
DYING_KEY = "AKIARUNBOOKWORKERB01"  # the worker that dies, told apart in moto's recorder


def create_instances(aws_url: str, names: list[str]) -> None:
    rds = boto3.client(
        "rds",
        endpoint_url=aws_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for name in names:
        rds.create_db_instance(
            DBInstanceIdentifier=name,
            Engine="postgres",
            DBInstanceClass="db.t4g.micro",
            AllocatedStorage=20,
            MasterUsername="scale",
            MasterUserPassword="scale-out-password",
            MultiAZ=True,
            AvailabilityZone="us-east-1a",
        )


async def gate_open(handle: WorkflowHandle) -> bool:
    status = await handle.query("status", result_type=RunbookStatus)
    return status.pending_gate is not None


async def test_two_workers_share_twenty_runs_and_one_dies_mid_action(
    reliability: Reliability,
) -> None:
    rel = reliability
    queue = queue_name("scale-out")
    sandbox = httpx.Client(base_url=rel.sandbox_url, timeout=10)
    sandbox.post("/control/reset").raise_for_status()
    sandbox.post("/control/heal-delay", json={"seconds": 1}).raise_for_status()
    names = [f"scale-{time.monotonic_ns()}-{i:02d}" for i in range(RUNS)]
    create_instances(rel.aws_url, names)
    recorder = rel.recorder()
    recorder.restart()
    dying = rel.worker(queue, crash="after-call:rds.RebootDBInstance", AWS_ACCESS_KEY_ID=DYING_KEY)
    surviving = rel.worker(queue)
    dying.go(), surviving.go()

    client = await rel.temporal.client()
    procedure = PROCEDURES["db-failover"]
    handles = []
    for name in names:
        inp = DbFailoverInput(
            db_instance_id=name, requested_by="alice", severity="P2", poll_seconds=0.2
        )
        handles.append(
            await client.start_workflow(
                procedure.workflow_type,
                inp,
                id=procedure.workflow_id(inp),
                task_queue=queue,
                result_type=RunbookResult,
            )
        )
    for handle in handles:
        await eventually(lambda h=handle: gate_open(h), f"{handle.id} at its gate", timeout=180)
    bob = rel.approver_keys()["bob"]
    for handle in handles:
        await handle.execute_update("approve", await signed(handle, "bob", key=bob))

    assert await dying.exited(timeout=180) == KILLED
    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 300)
    surviving.stop()

    assert [r.outcome for r in results] == ["completed"] * RUNS, [r.summary for r in results]
    calls = recorder.calls()
    reboots = Counter(
        c.params["DBInstanceIdentifier"] for c in calls if c.action == "RebootDBInstance"
    )
    assert reboots == dict.fromkeys(names, 1)
    readers = Counter(c.access_key for c in calls if c.action == "DescribeDBInstances")
    assert readers[DYING_KEY] > 0 and readers[WORKER_ACCESS_KEY] > 0  # both took work
    reboots_seen = [
        s.detail for r in results for s in r.timeline if s.name == "reboot with force-failover"
    ]
    assert any("already" in d for d in reboots_seen), reboots_seen  # the lost one found it done
