"""The approval gate every procedure uses: escalation, four eyes, authenticated approvers,
approval parameters. Workflow tests on the dev server (Updates; a worker restart on a
time-skipping server of its own), activity tests direct."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

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
)
from tests.fakes.approvers import key_of, signed, write_roster
from tests.fakes.systems import FakeSystems
from tests.temporal_env import private_ts_env, running, until
from workflows.gate import GatedRunbook
from workflows.models import DecisionAck, GateResult, ParamSpec, RunbookInput, RunbookStatus

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


async def probe(
    env: WorkflowEnvironment, fakes: FakeSystems, **fields: object
) -> AsyncIterator[WorkflowHandle]:
    async with probe_worker(env, fakes) as queue:
        inp = RunbookInput(requested_by="alice", **fields)  # type: ignore[arg-type]
        handle = await env.client.start_workflow(
            GateProbe.run, inp, id=f"gate-probe/{uuid.uuid4()}", task_queue=queue
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
    async for handle in probe(dev_env, FakeSystems(roster)):
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
    fakes = FakeSystems(roster, policy=EscalationPolicy(two_approvers=frozenset({"gate-probe"})))
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
    fakes = FakeSystems(roster)
    async for handle in probe(dev_env, fakes, severity="P1", approval_timeout_seconds=1):
        await wait_open(handle, "engineering-manager")
        too_low = await refused(handle, await signed(handle, "bob"))
        assert "bob' is on-call; at level engineering-manager" in too_low
        await handle.signal("approve", await signed(handle, "alice"))  # refused: recorded
        await handle.execute_update("approve", await signed(handle, "carol"))
        result = await handle.result()
        status = await handle.query("status", result_type=RunbookStatus)
    assert result.approved and result.decided_by == "carol"
    refusals = [s.detail for s in status.timeline if s.outcome == "refused"]
    assert any("'alice'" in r and "second person" in r for r in refusals)
    assert [n.kind for n in fakes.notes] == ["approval_request", "escalation"]
    assert [p.action for p in fakes.pages] == ["trigger", "trigger", "resolve"]


async def test_a_worker_restart_mid_escalation_loses_nothing_and_sends_nothing_twice(
    own_ts_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    env, fakes = own_ts_env, FakeSystems(roster)
    async with probe_worker(env, fakes) as queue:
        handle = await env.client.start_workflow(
            GateProbe.run,
            RunbookInput(requested_by="alice", severity="P1", approval_timeout_seconds=600),
            id=f"gate-probe/{uuid.uuid4()}",
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
    async for handle in probe(dev_env, FakeSystems(roster)):
        await handle.execute_update("reject", await signed(handle, "erin", approve=False))
        result = await handle.result()
    assert not result.approved and not result.timed_out and result.decided_by == "erin"


# ---- the activities ------------------------------------------------------------------------


def plan(policy: EscalationPolicy, severity: str, opened_at: datetime, procedure: str = "x"):  # type: ignore[no-untyped-def]
    acts = ApprovalActivities(policy, None, None)
    req = EscalationRequest(procedure=procedure, severity=severity, opened_at=opened_at)
    return ActivityEnvironment().run(acts.plan_escalation, req)


def test_p3_is_due_at_the_end_of_the_next_business_day_in_its_time_zone() -> None:
    policy = EscalationPolicy(business_hours=(time(9), time(18)), timezone="Europe/Paris")
    friday_evening = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
    [level] = plan(policy, "P3", friday_evening).levels
    assert level.deadline == datetime(2026, 11, 30, 17, 0, tzinfo=UTC)  # Monday 18:00 Paris


def test_response_times_and_paths_come_from_the_policy() -> None:
    policy = EscalationPolicy(
        response_minutes={"P0": 5, "P1": 30, "P2": 60}, two_approvers=frozenset({"db-failover"})
    )
    opened = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    p0 = plan(policy, "P0", opened, procedure="db-failover")
    assert [(lv.role, lv.deadline - opened) for lv in p0.levels] == [
        ("on-call", timedelta(minutes=5)),
        ("engineering-manager", timedelta(minutes=10)),
        ("cto", timedelta(minutes=15)),
    ]
    assert p0.levels[1].may_decide == ["engineering-manager", "cto"]
    assert p0.approvals_required == 2
    assert plan(policy, "P2", opened).approvals_required == 1


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
