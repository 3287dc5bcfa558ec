"""A namespace user resets runs to act again on an approval they recorded (issue: a reset of a
finished db-failover run failed the database over a second time, with no new decision).

Every mutating procedure runs once, approved by bob; then the run is reset with the Temporal
CLI (`temporal workflow reset`) to every workflow task completed after the verified decision,
one reset after the other, each followed to its end. First the points after the last
mutation (the resources as the run left them), then, once someone else has put the resources
back as they were before the run (the database failed back, the service scaled down, the
revision, the secret and the listener certificate restored), the points before a mutation:
there, only the worker's check of the approvals stands between the reset run and AWS. Also a
reset while the failover is in flight (the reset dispatches it again, under the new run),
and a copy of the signed start. The seven procedures run at once; rollback waits for
kafka-lag (both change `context-engine`), api-errors for db-failover. Counted at moto's
recorder: not one mutation after the original run's."""

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from tests.fakes.approvers import signed
from tests.reliability.adversary import (
    INPUTS,
    KAFKA_INCIDENT,
    ResetPoint,
    ResetRun,
    mutations,
    reset_and_follow,
    reset_points,
    until_async,
)
from tests.reliability.conftest import Reliability, queue_name
from tests.reliability.fault_proxy import FaultProxy, Rule
from workflows.models import RunbookStatus

pytestmark = pytest.mark.timeout(900)

CLUSTER = "prod-revenue-context"
DB = "prod-revenue-context-db"
SECRET = "prod/revenue-context/config"


# Chains that wait for another: rollback and kafka-lag both change `context-engine`;
# api-errors would (rightly) blame the database while db-failover's incident is on.
# high-memory and llm-budget (re)deploy `api`: before api-errors, they would be "a deploy in
# the last hour" and api-errors would (rightly) hand off to rollback instead of scaling.
AFTER = {
    "rollback": "kafka-lag",
    "api-errors": "db-failover",
    "high-memory": "api-errors",
    "llm-budget": "api-errors",
}


def aws(rel: Reliability, service: str) -> Any:
    """Someone else's AWS access (not the worker's key: the recorder tells them apart)."""
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=rel.aws_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@dataclass
class Before:
    """The resources before the runs: what `drift_back` restores."""

    counts: dict[str, int] = field(default_factory=dict)
    task_definitions: dict[str, str] = field(default_factory=dict)
    secret: str = ""
    certificate: str = ""
    listener: str = ""


def snapshot(rel: Reliability) -> Before:
    ecs, elb = aws(rel, "ecs"), aws(rel, "elbv2")
    services = ecs.describe_services(
        cluster=CLUSTER, services=["api", "context-engine", "orchestration-engine"]
    )["services"]
    before = Before(
        counts={s["serviceName"]: s["desiredCount"] for s in services},
        task_definitions={s["serviceName"]: s["taskDefinition"] for s in services},
        secret=aws(rel, "secretsmanager").get_secret_value(SecretId=SECRET)["SecretString"],
    )
    [alb] = elb.describe_load_balancers(Names=["prod-revenue-context-alb"])["LoadBalancers"]
    for listener in elb.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"]:
        if listener["Protocol"] == "HTTPS":
            before.listener = listener["ListenerArn"]
            before.certificate = listener["Certificates"][0]["CertificateArn"]
    return before


def drift_back(rel: Reliability, procedure: str, before: Before) -> None:
    """Put the procedure's resource back as it was before the run, as a person or another
    system might: what a repeat of the run's own state checks would then find to do again."""
    ecs = aws(rel, "ecs")
    if procedure == "db-failover":  # the database fails back to its first zone
        aws(rel, "rds").reboot_db_instance(DBInstanceIdentifier=DB, ForceFailover=True)
    elif procedure in ("kafka-lag", "api-errors"):
        service = "context-engine" if procedure == "kafka-lag" else "api"
        ecs.update_service(cluster=CLUSTER, service=service, desiredCount=before.counts[service])
    elif procedure == "high-memory":
        td = before.task_definitions["orchestration-engine"]
        ecs.update_service(cluster=CLUSTER, service="orchestration-engine", taskDefinition=td)
    elif procedure == "rollback":  # the bad deploy again
        td = before.task_definitions["context-engine"]
        ecs.update_service(cluster=CLUSTER, service="context-engine", taskDefinition=td)
    elif procedure == "llm-budget":
        aws(rel, "secretsmanager").put_secret_value(SecretId=SECRET, SecretString=before.secret)
    elif procedure == "cert-renewal":
        aws(rel, "elbv2").modify_listener(
            ListenerArn=before.listener, Certificates=[{"CertificateArn": before.certificate}]
        )


async def database_back_in_its_first_zone(rel: Reliability) -> bool:
    [db] = aws(rel, "rds").describe_db_instances(DBInstanceIdentifier=DB)["DBInstances"]
    return bool(db["DBInstanceStatus"] == "available" and db["AvailabilityZone"].endswith("1a"))


async def gate_open(handle: WorkflowHandle) -> bool:
    """True once the gate is open; a run that ended first fails the test with its summary."""
    status = await handle.query("status", result_type=RunbookStatus)
    if status.phase in ("done", "failed"):
        raise EndedError(f"{handle.id} ended without a gate: {status.timeline[-3:]}")
    return status.pending_gate is not None


class EndedError(AssertionError):
    pass


@dataclass
class Chain:
    procedure: str
    resets: list[ResetRun] = field(default_factory=list)
    copy_detail: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def attack(
    rel: Reliability, client: Client, queue: str, chain: Chain, before: Before, after: Chain | None
) -> None:
    procedure = chain.procedure
    if after:  # both change the same service
        await after.done.wait()
    began = time.monotonic()
    handle = await rel.start(queue, procedure, **INPUTS[procedure])
    original = handle.result_run_id or ""
    await until_async(lambda: gate_open(handle), f"{procedure}: the gate", 180)
    await handle.execute_update("approve", await signed(handle, "bob", key=bob(rel)))
    result = await asyncio.wait_for(handle.result(), timeout=300)
    assert result.outcome == "completed", (procedure, result.summary)
    made = len(mutations(rel, procedure))
    assert made >= 1, procedure
    points = reset_points(await handle.fetch_history())
    address = rel.temporal.address
    for point in [p for p in points if not p.before_a_mutation]:
        chain.resets.append(await reset_and_follow(client, address, handle.id, original, point))
    drift_back(rel, procedure, before)
    if procedure == "db-failover":
        await until_async(lambda: database_back_in_its_first_zone(rel), "the fail-back", 120)
    for point in [p for p in points if p.before_a_mutation]:
        chain.resets.append(await reset_and_follow(client, address, handle.id, original, point))
    assert len(mutations(rel, procedure)) == made, (procedure, mutations(rel, procedure)[made:])
    chain.copy_detail = await copy_of_the_signed_start(client, queue, handle, original)
    print(f"{procedure}: {len(points)} resets after {time.monotonic() - began:.0f}s")
    chain.done.set()


async def copy_of_the_signed_start(
    client: Client, queue: str, handle: WorkflowHandle, original: str
) -> str:
    """The original run's signed input, started again (it is in the history for any namespace
    user to copy): the requester is not proven this time."""
    history = await client.get_workflow_handle(handle.id, run_id=original).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    copy = await client.start_workflow(
        started.workflow_type.name,
        json.loads(started.input.payloads[0].data),
        id=handle.id,
        task_queue=queue,
    )
    status = await until_async(lambda: gate_status(copy), f"{handle.id}: the copy's gate", 180)
    await copy.terminate("adversary test done")
    gate = status.pending_gate
    assert gate and gate.requester_proven is False and gate.approvals_required == 2, gate
    return gate.requester_detail


async def gate_status(handle: WorkflowHandle) -> RunbookStatus | None:
    status: RunbookStatus = await handle.query("status", result_type=RunbookStatus)
    return status if status.pending_gate else None


def time_now() -> str:
    return datetime.now(UTC).isoformat()


def bob(rel: Reliability) -> str:
    return rel.approver_keys()["bob"]


def prepare_sandbox(rel: Reliability) -> httpx.Client:
    sandbox = httpx.Client(base_url=rel.sandbox_url, timeout=30)
    sandbox.post("/control/reset").raise_for_status()
    sandbox.post("/control/heal-delay", json={"seconds": 1}).raise_for_status()
    sandbox.post("/control/ecs", json={"task_start_seconds": 0.3}).raise_for_status()
    sandbox.post("/control/incidents/db-failover").raise_for_status()
    sandbox.post("/control/incidents/llm-budget").raise_for_status()
    sandbox.post("/control/incidents/kafka-lag", json=KAFKA_INCIDENT).raise_for_status()
    sandbox.post("/control/incidents/api-errors", json={"cause": "capacity"}).raise_for_status()
    sandbox.post("/control/incidents/rollback", json={"services": ["context-engine"]})
    return sandbox


async def test_resets_to_every_point_after_a_verified_decision_change_nothing(
    reliability: Reliability,
) -> None:
    rel = reliability
    queue = queue_name("adversary-reset")
    workers = [rel.worker(queue).go() for _ in range(2)]
    sandbox = prepare_sandbox(rel)
    before = snapshot(rel)
    rel.recorder().restart()
    client = await rel.temporal.client()
    chains = {name: Chain(name) for name in INPUTS}
    began = time.monotonic()
    try:
        async with asyncio.TaskGroup() as group:
            for name, chain in chains.items():
                after = chains[AFTER[name]] if name in AFTER else None
                group.create_task(attack(rel, client, queue, chain, before, after))
    finally:
        for worker in workers:
            worker.stop()
        sandbox.post("/control/reset")
    print(f"all resets in {time.monotonic() - began:.0f}s")
    for name, chain in chains.items():
        before_mutation = [r for r in chain.resets if r.point.before_a_mutation]
        assert before_mutation, name
        for run in before_mutation:  # each reached a mutation: refused where it happens
            assert run.refusals, (name, run)
            assert "does not hold for run" in run.outcome, (name, run)
            assert "needs a fresh decision" in run.outcome, (name, run)
        for run in chain.resets:  # every reset run ended, without a new mutation
            assert run.outcome == "completed" or "failed" in run.outcome, (name, run)
        assert "already used by run" in chain.copy_detail, (name, chain.copy_detail)
    counts = {
        name: (len(c.resets), sum(r.point.before_a_mutation for r in c.resets))
        for name, c in chains.items()
    }
    print(f"resets (all, before a mutation): {counts}")


async def test_a_reset_while_the_failover_is_in_flight_does_not_fail_over_again(
    reliability: Reliability,
) -> None:
    """The failover's AWS call is slowed (8 s, through the fault proxy) so it is in flight
    when an alarm reaches the run and a reset goes back to that workflow task: the reset run
    has the failover pending and Temporal dispatches it again, under the new run's id. The
    worker refuses that attempt; the original call reached AWS once."""
    rel = reliability
    sandbox = httpx.Client(base_url=rel.sandbox_url, timeout=30)
    sandbox.post("/control/reset").raise_for_status()
    sandbox.post("/control/heal-delay", json={"seconds": 1}).raise_for_status()
    sandbox.post("/control/incidents/db-failover").raise_for_status()
    routes = {"": rel.aws_url}
    with FaultProxy(routes) as proxy:
        slow: Callable[[Any], bool] = lambda r: r.aws_action == "RebootDBInstance"  # noqa: E731
        proxy.add(Rule("slow failover", slow, "delay", seconds=8))
        queue = queue_name("adversary-in-flight")
        worker = rel.worker(queue, AWS_ENDPOINT_URL=proxy.url).go()
        try:
            rel.recorder().restart()
            handle = await rel.start(queue, "db-failover", **INPUTS["db-failover"])
            original = handle.result_run_id or ""
            await until_async(lambda: gate_open(handle), "the gate", 180)
            await handle.execute_update("approve", await signed(handle, "bob", key=bob(rel)))

            async def failover_called() -> bool:
                return proxy.seen(slow) > 0

            await until_async(failover_called, "the failover call", 60)
            alarm = {"source": "cloudwatch", "alarm": "db-cpu-high", "received_at": time_now()}
            await handle.signal("alarm", alarm)
            point = await until_async(lambda: alarm_task(handle), "the alarm's workflow task", 30)
            client = await rel.temporal.client()
            run = await reset_and_follow(client, rel.temporal.address, handle.id, original, point)

            async def original_call_done() -> bool:
                return len(mutations(rel, "db-failover")) >= 1

            await until_async(original_call_done, "the original (slowed) failover call", 60)
        finally:
            worker.stop()
    assert run.refusals and "does not hold for run" in run.outcome, run
    # The worker has exited, so its original attempt is over: its call reached AWS once (it
    # was not interrupted into a retry when its run was reset), the reset run's not at all.
    assert len(mutations(rel, "db-failover")) == 1
    assert proxy.seen(slow) == 1


async def alarm_task(handle: WorkflowHandle) -> ResetPoint | None:
    """The workflow task that took the alarm while the failover was still in flight."""
    events = list((await handle.fetch_history()).events)
    signalled = [
        e.event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]
    if not signalled:
        return None
    after = [e for e in events if e.event_id > signalled[-1]]
    assert not any(e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED for e in after)
    done = [
        e.event_id for e in after if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]
    return ResetPoint(done[0], before_a_mutation=True) if done else None
