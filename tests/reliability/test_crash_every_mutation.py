"""Crashes at every mutation of the procedures other than db-failover: llm-budget,
high-memory, kafka-lag, api-errors, rollback, cert-renewal.

Each run's worker is killed by SIGKILL as each mutating step is scheduled, inside it after
AWS answered, and as the step after it is scheduled; a new worker carries on. What every
procedure shares (diagnosis fan-out, the gate, notifications, the incident log, the CLI) is
crash-tested step by step with db-failover (test_crash.py); here the first worker of each
chain runs up to the gate and the approval and dies as the first mutation is scheduled.

The six chains run at once, each on its own task queue, so the test takes about as long
as the longest chain: llm-budget redeploys `api` while api-errors scales it (scaling does
not replace ECS's deployment), high-memory changes `orchestration-engine`, kafka-lag scales
`context-engine` (rollback waits for it: both change that service). Counted at moto's
recorder: every mutation reached AWS once."""

import asyncio
import json
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from activities.locks import LOCK_WORKFLOW, STATE_QUERY, LockState
from tests.e2e.test_kafka_lag_api_errors_triage import KAFKA_INCIDENT
from tests.fakes.approvers import signed
from tests.reliability.conftest import WORKER_ACCESS_KEY, Reliability, queue_name
from tests.reliability.crash_chain import CrashChain
from tests.reliability.harness import AwsCall
from tests.temporal_env import eventually
from workflows.models import RunbookResult, RunbookStatus

pytestmark = pytest.mark.timeout(600)

SECRET = "prod/revenue-context/config"
CLUSTER = "prod-revenue-context"
GOOD_TAG = "v1.4.2"  # the sandbox's seed; its bad deploy is v1.5.0
BUDGET_KEY = "LLM_DAILY_BUDGET"


@dataclass
class Chain:
    procedure: str
    inp: dict[str, Any]
    # Where each worker dies, in order. A last worker (no crash) runs the procedure to its
    # end.
    plan: list[str]
    # The worker for plan[gate_at] is alive when the gate opens: the approval is sent then,
    # that worker checks it and dies at its point.
    gate_at: int = 0
    # Approved only once this other chain's run is over (both change the same service).
    after: str | None = None
    hit: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


CHAINS = [
    Chain(
        "llm-budget",
        {"watch_minutes": 0.05, "watch_interval_seconds": 1},
        [
            "schedule:secrets.set_number",  # approved -> merge one key into the secret
            "after-call:secrets-manager.PutSecretValue",  # the version written, not reported
            "schedule:ecs.force_new_deployment",  # secret set -> redeploy api
            "after-call:ecs.UpdateService",  # the deployment forced, not reported
            "schedule:ecs.wait_rollout",  # redeploy retried (not repeated) -> rollout
            "schedule:llm.wait_budget_in_force",  # rolled out -> verify the budget
        ],
    ),
    Chain(
        "high-memory",
        {"service": "orchestration-engine", "verify_checks": 20, "verify_interval_seconds": 1},
        [
            "schedule:ecs.register_memory_revision",  # approved -> new revision
            "after-call:ecs.RegisterTaskDefinition",  # registered, not reported
            "schedule:ecs.use_task_definition",  # revision reused -> update the service
            "after-call:ecs.UpdateService",  # service updated, not reported
            "schedule:ecs.wait_rollout",  # update retried (not repeated) -> rollout
        ],
    ),
    Chain(
        "kafka-lag",
        {"sample_seconds": 1, "settle_seconds": 2, "poll_seconds": 0.5, "drain_target_seconds": 10},
        [
            "schedule:ecs.scale_service",  # approved -> scale context-engine
            "after-call:ecs.UpdateService",  # scaled, not reported
            "schedule:ecs.wait_running",  # scale retried (not repeated) -> wait
        ],
    ),
    Chain(
        "api-errors",
        {"error_window_seconds": 2, "poll_seconds": 0.5, "log_minutes": 5},
        [
            "schedule:ecs.scale_service",
            "after-call:ecs.UpdateService",
            "schedule:ecs.wait_running",
        ],
    ),
    Chain(
        "rollback",  # context-engine, from the sandbox's bad deploy, once kafka-lag is over
        {
            "services": ["context-engine"],
            "target": GOOD_TAG,
            "reason": "failed-smoke-tests",
            "poll_seconds": 0.5,
            "verify_interval_seconds": 1,
        },
        [
            "schedule:ecs.use_task_definition",  # approved -> point the service back
            "after-call:ecs.UpdateService",  # updated, not reported
            "schedule:ecs.wait_rollout",  # update retried (not repeated) -> rollout
            "schedule:health.check",  # rolled out -> verify /health
        ],
        after="kafka-lag",
    ),
    Chain(
        "cert-renewal",  # the certificate is obtained before the gate, swapped after it
        {"poll_seconds": 1, "verify_interval_seconds": 1},
        [
            "schedule:acm.request_certificate",  # diagnosed -> request
            "after-call:acm.RequestCertificate",  # requested, not reported
            "schedule:route53.upsert_record",  # request retried (found by its token) -> DNS
            "after-call:route-53.ChangeResourceRecordSets",  # record written, not reported
            "schedule:acm.wait_issued",  # UPSERT retried (already there) -> wait for ACM
            "schedule:elb.set_listener_certificate",  # issued, approved -> swap
            "after-call:elastic-load-balancing-v2.ModifyListener",  # swapped, not reported
            "schedule:elb.https_listeners",  # swap retried (already serves it) -> verify
        ],
        gate_at=5,
    ),
]
BY_NAME = {chain.procedure: chain for chain in CHAINS}


async def crash_through(rel: Reliability, chain: Chain) -> RunbookResult:
    """Start the procedure, approve it at its gate (signed, by Update), crash at every point."""
    queue = queue_name(f"crash-{chain.procedure}")
    crashes = CrashChain(rel, queue, [*chain.plan, None], ahead=2)
    began = time.monotonic()
    worker = crashes.release()
    client = await rel.temporal.client()
    handle = await rel.start(queue, chain.procedure, **chain.inp)

    async def gate_open() -> bool:
        status = await handle.query("status", result_type=RunbookStatus)
        return status.pending_gate is not None

    for index, point in enumerate(chain.plan):
        if index:
            worker = crashes.release()
        if index == chain.gate_at:
            await eventually(gate_open, f"{handle.id}: the gate to open", timeout=180)
            if chain.after:
                await BY_NAME[chain.after].done.wait()
            print(f"{chain.procedure}: approved after {time.monotonic() - began:.1f}s")
            key = rel.approver_keys()["bob"]
            await handle.execute_update("approve", await signed(handle, "bob", key=key))
        await crashes.crashed(worker, point)
    last = crashes.release()
    result = await asyncio.wait_for(handle.result(), timeout=240)
    await eventually(
        partial(locks_released, client, queue), f"{queue}: its locks released", timeout=120
    )
    last.stop()
    print(f"{chain.procedure}: {result.outcome} after {time.monotonic() - began:.1f}s")
    chain.hit = crashes.hit
    chain.done.set()
    return result


def only_the_running_revision(ecs: Any, service: str) -> None:
    """A revision with more memory that an earlier test on this stack registered and left
    (the adversarial resets put the service back, not its family) would be reused: the
    chain's crash after RegisterTaskDefinition would never come. The sandbox's reset does
    not touch ECS revisions, so the newer ones are deregistered here."""
    [svc] = ecs.describe_services(cluster=CLUSTER, services=[service])["services"]
    family, running = svc["taskDefinition"].rsplit("/", 1)[-1].split(":")
    newer = [
        arn
        for arn in ecs.list_task_definitions(familyPrefix=family, status="ACTIVE")[
            "taskDefinitionArns"
        ]
        if int(arn.rsplit(":", 1)[-1]) > int(running)
    ]
    for arn in newer:
        ecs.deregister_task_definition(taskDefinition=arn)


async def locks_released(client: Client, queue: str) -> bool:
    """No lock of the chain's queue is held or asked for: the run, on the worker that outlived
    the crashes, released what the killed workers had taken (a free lock may linger)."""
    running = f'WorkflowType = "{LOCK_WORKFLOW}" AND ExecutionStatus = "Running"'
    for found in [w async for w in client.list_workflows(running)]:
        if found.id.startswith(f"lock/{queue}/"):
            state = await client.get_workflow_handle(found.id).query(
                STATE_QUERY, result_type=LockState
            )
            if state.holder or state.queue:
                return False
    return True


def count(calls: list[AwsCall], action: str, **params: object) -> int:
    return sum(
        1
        for c in calls
        if c.action == action and all(c.params.get(k) == v for k, v in params.items())
    )


def steps(result: RunbookResult) -> dict[str, str]:
    return {s.name: f"{s.outcome}: {s.detail}" for s in result.timeline}


async def test_every_mutation_survives_a_crash_before_inside_and_after_it(
    reliability: Reliability,
) -> None:
    rel = reliability
    sandbox = httpx.Client(base_url=rel.sandbox_url, timeout=10)
    sandbox.post("/control/reset").raise_for_status()
    sandbox.post("/control/ecs", json={"task_start_seconds": 0.3}).raise_for_status()
    sandbox.delete("/slack/messages").raise_for_status()
    sandbox.post("/control/incidents/llm-budget").raise_for_status()
    sandbox.post("/control/incidents/kafka-lag", json=KAFKA_INCIDENT).raise_for_status()
    sandbox.post("/control/incidents/api-errors", json={"cause": "capacity"}).raise_for_status()
    bad_deploy = {"services": ["context-engine"]}
    sandbox.post("/control/incidents/rollback", json=bad_deploy).raise_for_status()
    assert sandbox.get("/health").status_code == 503
    only_the_running_revision(rel.aws("ecs"), "orchestration-engine")
    sm = rel.aws("secretsmanager")

    def versions() -> set[str]:
        return {v["VersionId"] for v in sm.list_secret_version_ids(SecretId=SECRET)["Versions"]}

    before, versions_before = (
        json.loads(sm.get_secret_value(SecretId=SECRET)["SecretString"]),
        versions(),
    )
    recorder = rel.recorder()
    recorder.restart()

    async with asyncio.TaskGroup() as group:  # one chain failing cancels the others
        runs = [group.create_task(crash_through(rel, chain)) for chain in CHAINS]
    results = {chain.procedure: run.result() for chain, run in zip(CHAINS, runs, strict=True)}
    for chain in CHAINS:
        result = results[chain.procedure]
        assert result.outcome == "completed", (chain.procedure, result.summary)
        assert chain.hit == chain.plan, chain.procedure
        assert result.decision and result.decision.approvers == ["bob"]
        held = [k for k in steps(result) if k.startswith(("lock ", "unlock "))]
        assert held and len(held) % 2 == 0, (chain.procedure, held)  # each lock let go
    calls = recorder.calls(WORKER_ACCESS_KEY)

    # llm-budget: one new secret version with every key kept, one forced deployment.
    after = json.loads(sm.get_secret_value(SecretId=SECRET)["SecretString"])
    budget = float(after[BUDGET_KEY])
    assert budget > float(before[BUDGET_KEY])
    assert after == {**before, BUDGET_KEY: repr(budget)}
    assert len(versions() - versions_before) == 1
    assert count(calls, "PutSecretValue") == 1
    assert count(calls, "UpdateService", service="api", forceNewDeployment=True) == 1
    done = steps(results["llm-budget"])
    assert "already written by this step" in done[f"set {BUDGET_KEY}"]
    assert "already replaced" in done["redeploy api"]

    # high-memory: one revision registered (the retry reused it), the service updated once.
    assert count(calls, "RegisterTaskDefinition") == 1
    assert count(calls, "UpdateService", service="orchestration-engine") == 1
    done = steps(results["high-memory"])
    assert "reused" in done["register revision"]
    assert "already on" in done["update service orchestration-engine"]

    # kafka-lag and api-errors: each scaled once; the retry found the count already set.
    scaled = [c for c in calls if c.action == "UpdateService" and "desiredCount" in c.params]
    assert count(scaled, "UpdateService", service="context-engine") == 1
    assert count(scaled, "UpdateService", service="api", desiredCount=5) == 1
    assert "already at desired" in steps(results["kafka-lag"])["scale context-engine"]
    assert "already at desired" in steps(results["api-errors"])["scale api"]

    # rollback: context-engine pointed back once; /health healthy again.
    moved = [c for c in calls if c.action == "UpdateService" and "taskDefinition" in c.params]
    assert count(moved, "UpdateService", service="context-engine") == 1
    assert "no update sent" in steps(results["rollback"])["update context-engine"]
    assert sandbox.get("/health").status_code == 200

    # cert-renewal: one certificate requested, one record written, one listener swap.
    assert count(calls, "RequestCertificate") == 1
    assert count(calls, "ChangeResourceRecordSets") == 1
    assert count(calls, "ModifyListener") == 1
    done = steps(results["cert-renewal"])
    assert "already requested by this step" in done["request certificate"]
    assert "already points at" in next(v for k, v in done.items() if k.startswith("publish"))
    assert "already serves" in next(v for k, v in done.items() if k.startswith("set certif"))

    # No approval request or result message sent twice.
    texts = [m["text"] for m in sandbox.get("/slack/messages").json()]
    for chain in CHAINS:
        asked = [t for t in texts if "approval needed" in t and chain.procedure in t]
        assert len(asked) == 1, (chain.procedure, asked)
    for title in (
        "daily budget now",
        "high-memory done for orchestration-engine",
        "context-engine scaled to",
        "api scaled to 5",
        f"rollback completed to version {GOOD_TAG}",
        "cert-renewal done for",
    ):
        assert sum(title in t for t in texts) == 1, (title, texts)
    sandbox.post("/control/reset").raise_for_status()
