"""A namespace user against the gate of every mutating procedure, and against their inputs.

At a gate (each procedure's run started unsigned, so its requester is unproven and two
distinct people must approve, and as P0 asking for a week per escalation level):
- the clock: the gate's levels are the worker's (15 min for P0), not the input's week;
- oversized and malformed Updates and signals on every handler (approve, reject, alarm):
  refused naming the field, the status stays small, the CLI still reads and decides;
- the same person's approval twice at the same moment, by two Updates, two signals, one of
  each: one is taken, the gate still waits for a second person;
- approvers who disagree on the number (kafka-lag, api-errors, llm-budget): the second one's
  other number is refused, naming it; what is applied is what both approved.
Every run ends (rejected, or completed with the approved number), and moto's recorder sees
no unapproved and no duplicate mutation.

Inputs: every string and list field of every procedure oversized, a workflow id that does
not name the resource, state only continue-as-new may carry: refused naming the field,
before anything is done."""

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import boto3
import httpx
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import RawValue

from tests.fakes.approvers import signed
from tests.reliability.adversary import INPUTS, KAFKA_INCIDENT, PARAMS, mutations, until_async
from tests.reliability.conftest import WORKER_ACCESS_KEY, Reliability, queue_name
from tests.reliability.harness import run_cli
from workflows.models import RunbookResult, RunbookStatus
from workflows.registry import PROCEDURES

pytestmark = pytest.mark.timeout(900)

HUGE = "x" * 1_500_000  # the size: three of these once stalled a run for good
BIG = "x" * 100_000  # far over every bound; cheaper to send than HUGE
WEEK = 7 * 24 * 3600
# The run that acts (where the gate asks for a number) is the last: it fixes the incident.
MODES = ("signals", "mixed", "updates")
ACTING = "updates"
MUTATING_CALLS = {"RebootDBInstance", "UpdateService", "RegisterTaskDefinition", "PutSecretValue"}
MUTATING_CALLS |= {"ModifyListener", "RequestCertificate", "ChangeResourceRecordSets"}
NOT_JSON = RawValue(Payload(metadata={"encoding": b"json/plain"}, data=b"{not json"))


@dataclass
class Tally:
    """What was tried, by attack class, for the report."""

    cases: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, n: int = 1) -> None:
        self.cases[kind] = self.cases.get(kind, 0) + n


async def gate_of(handle: WorkflowHandle) -> RunbookStatus | None:
    status: RunbookStatus = await handle.query("status", result_type=RunbookStatus)
    if status.phase in ("done", "failed"):
        raise AssertionError(f"{handle.id} ended without a gate: {status.timeline[-3:]}")
    return status if status.pending_gate else None


async def refusals(handle: WorkflowHandle, count: int) -> RunbookStatus | None:
    status: RunbookStatus = await handle.query("status", result_type=RunbookStatus)
    return status if status.refused.count >= count else None


def keys(rel: Reliability, name: str) -> str:
    return rel.approver_keys()[name]


async def attack_handlers(
    rel: Reliability, queue: str, handle: WorkflowHandle, t: Tally, huge: bool
) -> None:
    """Oversized and malformed decisions and alarms, by Update and by signal. With `huge`,
    the issue's exact case: three refused 1.5 MB approvals (100 KB elsewhere: as far over
    every bound, cheaper to send)."""
    big = HUGE if huge else BIG
    updates = [
        ("approve", {"approver": "bob", "comment": BIG}, "comment"),
        ("approve", {"approver": BIG}, "approver"),
        ("approve", {"approver": "bob", "params": {"desired_count": BIG}}, "params"),
        ("approve", {"approver": "bob", "params": {f"k{i}": "1" for i in range(100)}}, "params"),
        ("approve", {"approver": "bob", "signature": BIG}, "signature"),
        ("reject", {"approver": "bob", "reason": BIG}, "reason"),
    ]
    for name, arg, named in updates:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(name, arg)
        assert named in str(refused.value.cause), (name, named, refused.value.cause)
    t.add("oversized Updates", len(updates))
    now = "2026-11-28T00:00:00Z"
    signals: list[tuple[str, Any]] = [
        *[("approve", {"approver": "bob", "comment": big})] * 3,
        ("reject", {"approver": "bob", "reason": BIG}),
        (
            "alarm",
            {"source": "cloudwatch", "alarm": "db-cpu-high", "received_at": now, "reason": BIG},
        ),
        ("alarm", {"source": "cloudwatch", "alarm": BIG, "received_at": now}),
        ("alarm", NOT_JSON),
        ("approve", NOT_JSON),
        ("reject", "not an object"),
    ]
    for name, arg in signals:
        await handle.signal(name, arg)
    t.add("oversized and malformed signals", len(signals))
    status = await until_async(lambda: refusals(handle, len(signals)), "every refusal", 120)
    assert status.refused.count == len(signals) and len(status.refused.last) == 5
    assert len(status.model_dump_json()) < 50_000, len(status.model_dump_json())
    shown = await run_cli(rel.cli_env(queue), rel.transcript, "status", handle.id, "--json")
    assert shown.returncode == 0, shown.stderr
    pending = await run_cli(rel.cli_env(queue), rel.transcript, "pending", "--json")
    assert pending.returncode == 0, pending.stderr


async def send(handle: WorkflowHandle, how: str, decision: Any) -> Any:
    if how == "update":
        return await handle.execute_update("approve", decision)
    return await handle.signal("approve", decision)


async def race(rel: Reliability, handle: WorkflowHandle, mode: str, params: dict[str, str]) -> None:
    """bob approves twice at the same moment: one approval counts."""
    key = keys(rel, "bob")
    one = await signed(handle, "bob", key=key, params=params)
    two = await signed(handle, "bob", key=key, params=params)
    hows = {"updates": ("update", "update"), "signals": ("signal", "signal")}.get(
        mode, ("update", "signal")
    )
    before = (await handle.query("status", result_type=RunbookStatus)).refused.count
    await asyncio.gather(
        send(handle, hows[0], one), send(handle, hows[1], two), return_exceptions=True
    )
    status = await until_async(lambda: refusals(handle, before + 1), "the duplicate refused")
    gate = status.pending_gate
    assert gate and gate.approved_by == ["bob"], (handle.id, mode, gate)
    assert "already approved" in status.refused.last[-1], status.refused


async def decide(
    rel: Reliability, queue: str, handle: WorkflowHandle, procedure: str, mode: str, value: str
) -> RunbookResult:
    """erin decides by the CLI. Where the gate asks for a number, in the last run: she
    tries another number than bob's (refused, naming both), then approves bob's."""
    erin = rel.cli_env(queue, approver="erin")
    if procedure in PARAMS and mode == ACTING:
        name = PARAMS[procedure]
        other = await run_cli(
            erin,
            rel.transcript,
            "approve",
            handle.id,
            "--as",
            "erin",
            "--set",
            f"{name}={OTHER[procedure]}",
        )
        assert other.returncode == 2, other.stderr
        assert f"differs from the {float(value):g} that bob approved" in other.stderr, other.stderr
        same = await run_cli(
            erin, rel.transcript, "approve", handle.id, "--as", "erin", "--set", f"{name}={value}"
        )
        assert same.returncode == 0, same.stderr
    else:
        no = await run_cli(
            erin, rel.transcript, "reject", handle.id, "--as", "erin", "--reason", "adversary test"
        )
        assert no.returncode == 0, no.stderr
    return await asyncio.wait_for(handle.result(), timeout=300)


# The numbers bob approves, and the other one erin tries (the issue: bob 5, erin 1000).
VALUE = {"kafka-lag": "6", "api-errors": "6", "llm-budget": "5"}
OTHER = {"kafka-lag": "10", "api-errors": "10", "llm-budget": "1000"}


async def chain(
    rel: Reliability, queue: str, procedure: str, t: Tally, results: dict[str, Any]
) -> None:
    began = time.monotonic()
    for mode in MODES:
        handle = await rel.start(
            queue,
            procedure,
            signed_by=None,  # unproven: two distinct people must approve
            severity="P0",
            approval_timeout_seconds=WEEK,
            **INPUTS[procedure],
        )
        status = await until_async(lambda h=handle: gate_of(h), f"{procedure}: the gate", 240)
        gate = status.pending_gate
        assert gate and gate.requester_proven is False and gate.approvals_required == 2, gate
        assert gate.level_deadline and gate.level_deadline - gate.requested_at == timedelta(
            minutes=15
        )
        assert gate.expires_at - gate.requested_at == timedelta(minutes=45)
        assert any(s.name == "escalation clock" and "ignored" in s.detail for s in status.timeline)
        t.add("clock overrides")
        if mode == MODES[0]:
            await attack_handlers(rel, queue, handle, t, huge=procedure == "db-failover")
        value = VALUE.get(procedure, "")
        params = {PARAMS[procedure]: value} if procedure in PARAMS and mode == ACTING else {}
        # The words a gate requires (db-failover on this healthy database: override=healthy).
        params |= {p.name: p.word for p in gate.params if p.word}
        await race(rel, handle, mode, params)
        t.add(f"duplicate approvals by {mode}")
        result = await decide(rel, queue, handle, procedure, mode, value)
        if procedure in PARAMS and mode == ACTING:
            assert result.outcome == "completed", (procedure, result.summary)
            assert result.decision and result.decision.approvers == ["bob", "erin"]
            assert result.decision.number(PARAMS[procedure]) == float(value)
            results[procedure] = result
            t.add("parameter disagreements")
        else:
            assert result.outcome == "rejected", (procedure, mode, result.summary)
    print(f"{procedure}: 3 gates attacked in {time.monotonic() - began:.0f}s")


async def test_the_gate_of_every_procedure_under_attack(reliability: Reliability) -> None:
    rel = reliability
    queue = queue_name("adversary-gate")
    workers = [rel.worker(queue).go() for _ in range(2)]
    sandbox = httpx.Client(base_url=rel.sandbox_url, timeout=30)
    sandbox.post("/control/reset").raise_for_status()
    sandbox.post("/control/ecs", json={"task_start_seconds": 0.3}).raise_for_status()
    sandbox.post("/control/incidents/llm-budget").raise_for_status()
    sandbox.post("/control/incidents/kafka-lag", json=KAFKA_INCIDENT).raise_for_status()
    sandbox.post("/control/incidents/api-errors", json={"cause": "capacity"}).raise_for_status()
    sandbox.post("/control/incidents/rollback", json={"services": ["context-engine"]})
    rel.recorder().restart()
    t, results = Tally(), {}
    began = time.monotonic()
    try:
        async with asyncio.TaskGroup() as group:
            for procedure in INPUTS:
                group.create_task(chain(rel, queue, procedure, t, results))
    finally:
        for worker in workers:
            worker.stop()
    print(f"gates attacked in {time.monotonic() - began:.0f}s: {t.cases}")
    # No mutation where erin rejected; one, with the number both approved, where she approved.
    for procedure in INPUTS:
        made = mutations(rel, procedure)
        if procedure not in PARAMS:
            assert made == [], (procedure, made)
    scaled = {p: mutations(rel, p) for p in ("kafka-lag", "api-errors")}
    for procedure, calls in scaled.items():
        assert [c.params.get("desiredCount") for c in calls] == [int(VALUE[procedure])], calls
    budget = mutations(rel, "llm-budget")
    assert [c.action for c in budget].count("PutSecretValue") == 1, budget
    secret = boto3.client(
        "secretsmanager",
        endpoint_url=rel.aws_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).get_secret_value(SecretId="prod/revenue-context/config")
    assert float(json.loads(secret["SecretString"])["LLM_DAILY_BUDGET"]) == float(
        VALUE["llm-budget"]
    )
    sandbox.post("/control/reset")


# ---- inputs ---------------------------------------------------------------------------------


def oversized_cases() -> list[tuple[str, str, Any]]:
    """(procedure, field, value) for every string and list field of every procedure's input."""
    cases = []
    for name, procedure in PROCEDURES.items():
        for field_name, info in procedure.input_model.model_fields.items():
            text = str(info.annotation)
            if "list" in text:
                cases.append((name, field_name, ["x" * 300] * 1000))
                cases.append((name, field_name, ["x" * 300_000]))
            elif "str" in text:
                cases.append((name, field_name, "x" * 300_000))
    return cases


async def refused_before_acting(
    client: Client, queue: str, workflow_type: str, inp: Any, workflow_id: str
) -> str:
    handle = await client.start_workflow(workflow_type, inp, id=workflow_id, task_queue=queue)
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), timeout=120)
    history = await handle.fetch_history()
    scheduled = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled == [], (workflow_id, scheduled)  # nothing read, nothing told, nothing done
    return str(failed.value.cause)


async def test_inputs_a_namespace_user_can_send_are_refused_before_anything_is_done(
    reliability: Reliability,
) -> None:
    rel = reliability
    queue = queue_name("adversary-inputs")
    worker = rel.worker(queue).go()
    client = await rel.temporal.client()
    rel.recorder().restart()
    t = Tally()
    try:
        oversized = oversized_cases()

        async def one_oversized(procedure: str, name: str, value: Any) -> None:
            p = PROCEDURES[procedure]
            cause = await refused_before_acting(
                client, queue, p.workflow_type, {name: value}, f"{procedure}/big-{uuid.uuid4()}"
            )
            assert name in cause, (procedure, name, cause)

        await asyncio.gather(*(one_oversized(*case) for case in oversized))
        t.add("oversized input fields", len(oversized))

        async def foreign(procedure: str) -> None:
            p = PROCEDURES[procedure]
            inp = p.input_model.model_validate({"requested_by": "alice"}).model_dump(mode="json")
            other = f"{procedure}/another-name-for-{p.resource(p.input_model.model_validate(inp))}"
            cause = await refused_before_acting(client, queue, p.workflow_type, inp, other)
            assert (
                "workflow id" in cause and p.workflow_id(p.input_model.model_validate(inp)) in cause
            )

        await asyncio.gather(*(foreign(name) for name in PROCEDURES))
        t.add("foreign workflow ids", len(PROCEDURES))

        forged_watch = {
            "requested_by": "carol",
            "severity": "P0",
            "watch": {
                "budget": 1000,
                "until": "2026-11-28T00:00:00Z",
                "summary": "LLM_DAILY_BUDGET 100 -> 1000",
                "decision": {"approved": True, "approvers": ["carol"], "decided_by": "carol"},
                "approvers": ["carol"],
            },
        }
        budget = PROCEDURES["llm-budget"]
        own_id = budget.workflow_id(budget.input_model.model_validate({}))  # the id is right
        cause = await refused_before_acting(
            client, queue, "LlmBudgetExhaustion", forged_watch, own_id
        )
        assert "watch: set only by the run itself" in cause
        t.add("forged carried-over state")
    finally:
        worker.stop()
    changed = [c for c in rel.recorder().calls(WORKER_ACCESS_KEY) if c.action in MUTATING_CALLS]
    assert changed == [], changed
    slack = httpx.get(f"{rel.sandbox_url}/slack/messages", timeout=10).json()
    assert not [m for m in slack if "approved by carol" in m["text"]]
    print(f"inputs: {t.cases}")
