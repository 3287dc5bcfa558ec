"""The approval gate every procedure uses: escalation, four eyes, authenticated approvers,
proven requesters, approval parameters, decisions one at a time, bounded refusals. Workflow
tests on the dev server (Updates, and Temporal's visibility for the requester check; a worker
restart on a time-skipping server of its own), activity tests direct."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner

from activities.approvals import (
    ApprovalActivities,
    EscalationPolicy,
    EscalationRequest,
    SignedDecision,
    VerifyRequest,
    sign,
    sla_table,
)
from activities.requesters import SignedStart, input_digest, sign_start
from tests.fakes.approvers import key_of, signed, write_roster
from tests.fakes.systems import FakeSystems
from tests.temporal_env import eventually, private_ts_env, running, until
from worker import earlier_runs
from workflows.gate import GatedRunbook
from workflows.models import (
    MAX_REFUSAL_TEXT,
    DecisionAck,
    GateResult,
    ParamSpec,
    RunbookInput,
    RunbookStatus,
)

pytestmark = pytest.mark.timeout(120)
BUDGET = ParamSpec(name="daily_budget", minimum=50, maximum=500, default=200)


@workflow.defn(name="GateProbe")
class GateProbe(GatedRunbook):
    """A procedure that is nothing but its gate, asking for one parameter."""

    procedure = "gate-probe"

    @workflow.run
    async def run(self, inp: RunbookInput) -> GateResult:
        self.begin(inp, "probe")
        self.tag(inp.severity)
        return await self.gate("probe", "probe the gate", ["nothing"], params=[BUDGET])


# Its clock moves on while no worker runs (a time-skipping server of the test's own).
own_ts_env = pytest.fixture(name="own_ts_env")(private_ts_env)


def probe_worker(env: WorkflowEnvironment, fakes: FakeSystems, queue: str | None = None):  # type: ignore[no-untyped-def]
    return running(
        env,
        [GateProbe],
        fakes.activities(),
        queue=queue,
        workflow_runner=UnsandboxedWorkflowRunner(),
        # No sticky queue: a worker that went away leaves its runs to the next one at once.
        max_cached_workflows=0,
    )


def dev_fakes(env: WorkflowEnvironment, roster: tuple[Path, Path], **kw: Any) -> FakeSystems:
    """The shared fakes with Temporal's real visibility for the requester check."""
    return FakeSystems(roster, earlier_runs=earlier_runs(env.client), **kw)


def signed_probe_input(workflow_id: str, signer: str | None = None, **fields: Any) -> RunbookInput:
    """A probe's start input, signed by its requester (alice) or with `signer`'s key."""
    inp = RunbookInput(requested_by="alice", **fields)
    now = datetime.now(UTC)
    start = SignedStart(
        kind="person",
        requester=inp.requested_by,
        workflow_type="GateProbe",
        workflow_id=workflow_id,
        input_digest=input_digest(inp.model_dump(mode="json")),
        issued_at=now,
        expires_at=now + timedelta(minutes=10),
    )
    proof = sign_start(start, key_of(signer or inp.requested_by))
    return inp.model_copy(update={"requester_proof": proof})


async def probe(
    env: WorkflowEnvironment, fakes: FakeSystems, *, sign_start: bool = True, **fields: Any
) -> AsyncIterator[WorkflowHandle]:
    """A probe run at its open gate; its start signed by alice unless told."""
    async with probe_worker(env, fakes) as queue:
        workflow_id = f"gate-probe/{uuid.uuid4()}"
        if sign_start:
            inp = signed_probe_input(workflow_id, **fields)
        else:
            inp = RunbookInput(requested_by="alice", **fields)
        handle = await env.client.start_workflow(
            GateProbe.run, inp, id=workflow_id, task_queue=queue
        )
        await wait_open(handle)
        yield handle


async def wait_open(handle: WorkflowHandle, level: str = "on-call") -> None:
    await until(handle, lambda s: s.pending_gate is not None and s.pending_gate.level == level)


async def timer_fired(handle: WorkflowHandle) -> bool:
    events = [e.event_type async for e in handle.fetch_history_events()]
    return EventType.EVENT_TYPE_TIMER_FIRED in events


async def refused(handle: WorkflowHandle, decision: object) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update("approve", decision)
    return str(err.value.cause)


async def test_forged_expired_unknown_and_self_approvals_are_refused(
    dev_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    async for handle in probe(dev_env, dev_fakes(dev_env, roster)):
        forged = await signed(handle, "bob", key="not-bobs-key")
        assert "does not match" in await refused(handle, forged)
        expired = await signed(handle, "bob", expires_in=timedelta(minutes=-1))
        assert "expired" in await refused(handle, expired)
        too_long = await signed(handle, "bob", expires_in=timedelta(days=2))
        assert "ahead" in await refused(handle, too_long)
        stranger = await signed(handle, "mallory", key="whatever")
        assert "not on the roster" in await refused(handle, stranger)
        self_approval = await signed(handle, "alice")
        assert "second person" in await refused(handle, self_approval)
        unsigned = {"approver": "bob"}
        assert "must be signed" in await refused(handle, unsigned)
        out_of_bounds = await signed(handle, "bob", params={"daily_budget": "5000"})
        assert "50 to 500" in await refused(handle, out_of_bounds)
        altered = (await signed(handle, "bob")).model_copy(
            update={"params": {"daily_budget": "90"}}
        )
        assert "does not match" in await refused(handle, altered)

        ok = await signed(handle, "bob", params={"daily_budget": "300"})
        ack = await handle.execute_update("approve", ok, result_type=DecisionAck)
        result = await handle.result()
    assert ack.approved and ack.decided_by == "bob"
    assert result.approved and result.approvers == ["bob"] and result.number("daily_budget") == 300


async def test_a_replayed_signature_is_refused_and_four_eyes_need_two_people(
    dev_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    policy = EscalationPolicy(two_approvers=frozenset({"gate-probe"}))
    fakes = dev_fakes(dev_env, roster, policy=policy)
    async for handle in probe(dev_env, fakes):
        first = await signed(handle, "bob")
        ack = await handle.execute_update("approve", first, result_type=DecisionAck)
        assert not ack.approved  # one of two
        assert "already used" in await refused(handle, first)
        again = await signed(handle, "bob")
        assert "already approved" in await refused(handle, again)
        await handle.execute_update("approve", await signed(handle, "erin"))
        result = await handle.result()
    assert result.approved and result.approvers == ["bob", "erin"]
    assert result.params == {"daily_budget": "200"}  # the default when nobody gave one


async def test_after_escalation_only_the_new_level_or_above_may_decide(
    dev_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    fakes = dev_fakes(dev_env, roster)
    async for handle in probe(dev_env, fakes, severity="P1", approval_timeout_seconds=1):
        await wait_open(handle, "engineering-manager")
        too_low = await refused(handle, await signed(handle, "bob"))
        assert "bob' is on-call; at level engineering-manager" in too_low
        await handle.signal("approve", await signed(handle, "alice"))  # refused: recorded
        await handle.execute_update("approve", await signed(handle, "carol"))
        result = await handle.result()
        status = await handle.query("status", result_type=RunbookStatus)
    assert result.approved and result.decided_by == "carol"
    assert any("'alice'" in r and "second person" in r for r in status.refused.last)
    assert [n.kind for n in fakes.notes] == ["approval_request", "escalation"]
    assert [p.action for p in fakes.pages] == ["trigger", "trigger", "resolve"]


async def test_a_worker_restart_mid_escalation_loses_nothing_and_sends_nothing_twice(
    own_ts_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    env, fakes = own_ts_env, FakeSystems(roster)
    async with probe_worker(env, fakes) as queue:
        workflow_id = f"gate-probe/{uuid.uuid4()}"
        handle = await env.client.start_workflow(
            GateProbe.run,
            signed_probe_input(workflow_id, severity="P1", approval_timeout_seconds=600),
            id=workflow_id,
            task_queue=queue,
        )
        await wait_open(handle)
    assert not await timer_fired(handle)
    # The on-call level runs out while no worker runs: the server fires its timer.
    await env.sleep(timedelta(seconds=601))
    assert await timer_fired(handle)
    async with probe_worker(env, fakes, queue):
        await wait_open(handle, "engineering-manager")
        await handle.execute_update("approve", await signed(handle, "erin"))
        result = await handle.result()
    assert result.approved and result.decided_by == "erin"
    assert [n.kind for n in fakes.notes] == ["approval_request", "escalation"]
    assert [p.action for p in fakes.pages] == ["trigger", "trigger", "resolve"]


async def test_a_valid_rejection_ends_the_gate(
    dev_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    async for handle in probe(dev_env, dev_fakes(dev_env, roster)):
        await handle.execute_update("reject", await signed(handle, "erin", approve=False))
        result = await handle.result()
    assert not result.approved and not result.timed_out and result.decided_by == "erin"


# ---- proven requesters ---------------------------------------------------------------------


async def test_an_unproven_requester_on_p1_needs_two_distinct_approvers(
    dev_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    async for handle in probe(dev_env, dev_fakes(dev_env, roster), sign_start=False):
        status = await handle.query("status", result_type=RunbookStatus)
        gate = status.pending_gate
        assert gate and gate.requester_proven is False and gate.approvals_required == 2
        assert "not signed" in gate.requester_detail
        first = await handle.execute_update(
            "approve", await signed(handle, "bob"), result_type=DecisionAck
        )
        assert not first.approved  # one of two
        await handle.execute_update("approve", await signed(handle, "erin"))
        result = await handle.result()
    assert result.approved and result.approvers == ["bob", "erin"]


async def test_a_signed_start_proves_its_requester_for_one_run_only(
    dev_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    fakes = dev_fakes(dev_env, roster)
    queue = f"gate-{uuid.uuid4()}"
    workflow_id = f"gate-probe/{uuid.uuid4()}"
    inp = signed_probe_input(workflow_id)
    async with probe_worker(dev_env, fakes, queue):
        first = await dev_env.client.start_workflow(
            GateProbe.run, inp, id=workflow_id, task_queue=queue
        )
        await wait_open(first)
        gate = (await first.query("status", result_type=RunbookStatus)).pending_gate
        assert gate and gate.requester_proven and gate.approvals_required == 1
        await first.execute_update("approve", await signed(first, "bob"))
        assert (await first.result()).approvers == ["bob"]
        # The same signed input again (its proof is in the first run's history for anyone
        # to copy): the requester is no longer proven.
        copy = await dev_env.client.start_workflow(
            GateProbe.run, inp, id=workflow_id, task_queue=queue
        )
        await wait_open(copy)
        gate = (await copy.query("status", result_type=RunbookStatus)).pending_gate
        assert gate and gate.requester_proven is False and gate.approvals_required == 2
        assert "already used by run" in gate.requester_detail
        await copy.terminate("test done")
        # Signed with another person's key: not alice's start.
        other_id = f"gate-probe/{uuid.uuid4()}"
        forged = await dev_env.client.start_workflow(
            GateProbe.run, signed_probe_input(other_id, signer="bob"), id=other_id, task_queue=queue
        )
        await wait_open(forged)
        gate = (await forged.query("status", result_type=RunbookStatus)).pending_gate
        assert gate and gate.requester_proven is False and "does not match" in gate.requester_detail
        await forged.terminate("test done")


# ---- decisions one at a time, the same parameters ----------------------------------------------


async def test_duplicate_approvals_arriving_together_count_once(
    dev_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    """bob sends two approvals at the same moment on a two-approver gate: by two Updates, two
    signals, one of each. Exactly one is taken; the gate still needs a second person."""
    policy = EscalationPolicy(two_approvers=frozenset({"gate-probe"}), game_day=True)
    for mode in ("updates", "signals", "mixed"):
        async for handle in probe(dev_env, dev_fakes(dev_env, roster, policy=policy)):
            one, two = await signed(handle, "bob"), await signed(handle, "bob")
            sends = {
                "updates": ("update", "update"),
                "signals": ("signal", "signal"),
                "mixed": ("update", "signal"),
            }[mode]
            outcomes = await asyncio.gather(
                *(send(handle, how, d) for how, d in zip(sends, (one, two), strict=True)),
                return_exceptions=True,
            )
            status = await until_refused(handle, 1)
            gate = status.pending_gate
            assert gate and gate.approved_by == ["bob"], (mode, gate)
            assert "already approved" in status.refused.last[-1], (mode, status.refused)
            if mode == "updates":
                assert sum(isinstance(o, WorkflowUpdateFailedError) for o in outcomes) == 1
            await handle.execute_update("approve", await signed(handle, "erin"))
            result = await handle.result()
        assert result.approvers == ["bob", "erin"], mode


async def send(handle: WorkflowHandle, how: str, decision: object) -> object:
    if how == "update":
        return await handle.execute_update("approve", decision)
    return await handle.signal("approve", decision)


async def until_refused(handle: WorkflowHandle, count: int) -> RunbookStatus:
    """The status once the gate has refused `count` decisions."""

    async def counted() -> RunbookStatus | None:
        status = await handle.query("status", result_type=RunbookStatus)
        return status if status.refused.count >= count else None

    found: RunbookStatus = await eventually(counted, f"{count} refusals")
    return found


async def test_every_approver_approves_the_same_parameters(
    dev_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    policy = EscalationPolicy(two_approvers=frozenset({"gate-probe"}))
    async for handle in probe(dev_env, dev_fakes(dev_env, roster, policy=policy)):
        await handle.execute_update(
            "approve", await signed(handle, "bob", params={"daily_budget": "60"})
        )
        other = await signed(handle, "erin", params={"daily_budget": "400"})
        refusal = await refused(handle, other)
        assert "params.daily_budget: 400 differs from the 60 that bob approved" in refusal
        default = await signed(handle, "erin")  # no number: the default, 200, is not 60 either
        assert "200 differs from the 60" in await refused(handle, default)
        same = await signed(handle, "erin", params={"daily_budget": "60.0"})
        await handle.execute_update("approve", same)
        result = await handle.result()
    assert result.approvers == ["bob", "erin"] and result.number("daily_budget") == 60


# ---- bounds: what a namespace user can make a run hold ---------------------------------------


async def test_oversized_and_repeated_refusals_stay_small(
    dev_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    """Three 1.5 MB approvals (the size that once made a run's status too large to read and
    its workflow task fail for ever), then many small refused ones: the status stays small,
    the run is decided and ends."""
    huge = "x" * 1_500_000
    async for handle in probe(dev_env, dev_fakes(dev_env, roster)):
        for field in ("comment", "approver"):
            with pytest.raises(WorkflowUpdateFailedError) as failed:
                await handle.execute_update("approve", {"approver": "bob", field: huge})
            assert field in str(failed.value.cause) and "at most" in str(failed.value.cause)
        for _ in range(3):
            await handle.signal("approve", {"approver": "bob", "comment": huge})
        for i in range(9):
            await handle.signal("approve", {"approver": f"nobody-{i}"})  # unsigned
        status = await until_refused(handle, 12)
        assert status.refused.count == 12 and len(status.refused.last) == 5
        assert all(len(text) <= MAX_REFUSAL_TEXT for text in status.refused.last)
        assert [s.name for s in status.timeline].count("refused") == 1
        assert len(status.model_dump_json()) < 20_000
        await handle.execute_update("approve", await signed(handle, "bob"))
        assert (await handle.result()).approved


async def test_alarm_deliveries_are_bounded(
    dev_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    now = datetime.now(UTC).isoformat()
    async for handle in probe(dev_env, dev_fakes(dev_env, roster)):
        for i in range(15):
            alarm = {"source": "cloudwatch", "alarm": f"alarm-{i}", "received_at": now}
            await handle.signal("alarm", alarm)
        await handle.signal(
            "alarm", {"source": "cloudwatch", "alarm": "x" * 300, "received_at": now}
        )
        await handle.signal("alarm", {"alarm": "no source"})
        storm = {"source": "alertmanager", "alarm": "alarm-0", "received_at": now, "count": 40}
        await handle.signal("alarm", storm)
        status = await until_refused(handle, 2)
        lines = {s.name: s.detail for s in status.timeline if s.name.startswith("alarm ")}
        assert len(lines) == 11  # ten alarms, then one line for the rest
        assert lines["alarm alarm-0 ALARM"].startswith("41x via alertmanager")
        assert lines["alarm (other alarms) ALARM"].startswith("5x via cloudwatch")
        assert any("alarm" in r and "at most 255" in r for r in status.refused.last)
        assert any("source" in r and "Field required" in r for r in status.refused.last)
        await handle.terminate("test done")


# ---- the activities ------------------------------------------------------------------------


async def plan(  # type: ignore[no-untyped-def]
    policy: EscalationPolicy,
    severity: str,
    opened_at: datetime,
    procedure: str = "x",
    level_seconds: int | None = None,
):
    acts = ApprovalActivities(policy, None, None)
    req = EscalationRequest(
        procedure=procedure, severity=severity, opened_at=opened_at, level_seconds=level_seconds
    )
    return await ActivityEnvironment().run(acts.plan_escalation, req)


async def test_p3_is_due_at_the_end_of_the_next_business_day_in_its_time_zone() -> None:
    policy = EscalationPolicy(business_hours=(time(9), time(18)), timezone="Europe/Paris")
    friday_evening = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
    [level] = (await plan(policy, "P3", friday_evening)).levels
    assert level.deadline == datetime(2026, 11, 30, 17, 0, tzinfo=UTC)  # Monday 18:00 Paris


async def test_response_times_and_paths_come_from_the_policy() -> None:
    policy = EscalationPolicy(
        response_minutes={"P0": 5, "P1": 30, "P2": 60}, two_approvers=frozenset({"db-failover"})
    )
    opened = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    p0 = await plan(policy, "P0", opened, procedure="db-failover")
    assert [(lv.role, lv.deadline - opened) for lv in p0.levels] == [
        ("on-call", timedelta(minutes=5)),
        ("engineering-manager", timedelta(minutes=10)),
        ("cto", timedelta(minutes=15)),
    ]
    assert p0.levels[1].may_decide == ["engineering-manager", "cto"]
    assert p0.approvals_required == 2
    assert (await plan(policy, "P2", opened)).approvals_required == 1


async def test_the_stated_sla_is_the_gates_own_clock() -> None:
    """What README and `runbook pending` state is what a gate does: each level's time, and
    the total to the end of the last level."""
    policy = EscalationPolicy(response_minutes={"P0": 5, "P1": 30, "P2": 60})
    opened = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    rows = {row.severity: row for row in sla_table(policy)}
    for severity in ("P0", "P1", "P2"):
        levels = (await plan(policy, severity, opened)).levels
        row = rows[severity]
        assert row.path == [level.role for level in levels]
        assert timedelta(minutes=row.total_minutes or 0) == levels[-1].deadline - opened
        assert timedelta(minutes=row.level_minutes or 0) == levels[0].deadline - opened
    assert (
        rows["P0"].text
        == "P0: 5 min a level (on-call -> engineering-manager -> cto); 15 min to the last level"
    )
    assert rows["P3"].total_minutes is None and "next business day (17:00 UTC)" in rows["P3"].text


async def test_the_sla_clock_is_the_workers_not_the_start_inputs() -> None:
    opened = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    week = 7 * 24 * 3600
    # An ordinary worker: a P0 asking for a week per level still reaches the CTO in 45 min.
    p0 = await plan(EscalationPolicy(), "P0", opened, level_seconds=week)
    assert p0.levels[-1].deadline - opened == timedelta(minutes=45)
    assert "ignored" in p0.clock_detail and "RUNBOOK_GAME_DAY" in p0.clock_detail
    # A game-day worker lets a run shorten its levels, never lengthen them.
    game_day = EscalationPolicy(game_day=True)
    short = await plan(game_day, "P0", opened, level_seconds=30)
    assert short.levels[-1].deadline - opened == timedelta(seconds=90) and not short.clock_detail
    long = await plan(game_day, "P0", opened, level_seconds=week)
    assert long.levels[-1].deadline - opened == timedelta(minutes=45)
    assert "not lengthen" in long.clock_detail


def test_verify_reads_the_roster_and_keys_on_every_call(tmp_path: Path) -> None:
    roster, keys = write_roster(tmp_path)
    acts = ApprovalActivities(EscalationPolicy(), roster, keys)
    decision = SignedDecision(
        workflow_id="w",
        run_id="r",
        gate="g",
        approve=True,
        approver="erin",
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
    )
    good = VerifyRequest(decision=decision, signature=sign(decision, key_of("erin")))
    assert ActivityEnvironment().run(acts.verify, good).role == "engineering-manager"
    keys.write_text('[keys]\nerin = "rotated"\n')  # a revoked key takes effect at once
    assert not ActivityEnvironment().run(acts.verify, good).ok
