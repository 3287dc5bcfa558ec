"""DatabaseFailover workflow logic on the time-skipping test server, with fake activities."""

import asyncio
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import (
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment

from tests.fakes.approvers import signed
from tests.fakes.systems import FakeSystems
from tests.temporal_env import gate_open, keep_history, running, start, until
from workflows.db_failover import DatabaseFailover, DbFailoverInput
from workflows.models import AlarmDelivery, Approval, RunbookResult

pytestmark = pytest.mark.timeout(120)


def failover_input(**fields: Any) -> DbFailoverInput:
    return DbFailoverInput(requested_by="alice", **fields)


async def test_approved_by_update_fails_over_once_and_notifies(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    fakes = FakeSystems(roster)
    async with running(ts_env, [DatabaseFailover], fakes.activities()) as queue:
        handle = await start(ts_env, queue, failover_input())
        status = await until(handle, gate_open)
        assert status.pending_gate and "us-east-1a -> us-east-1b" in status.pending_gate.plan[0]
        ack = await handle.execute_update(DatabaseFailover.approve, await signed(handle, "bob"))
        assert ack.approved and ack.decided_by == "bob"
        result: RunbookResult = await handle.result()
    assert result.outcome == "completed"
    assert fakes.calls.count("force_failover") == 1
    assert {"wait_available", "wait_healthy", "idle_in_transaction"} <= set(fakes.calls)
    assert [n.kind for n in fakes.notes] == ["approval_request", "resolved"]
    verdicts = {f.check: f.verdict for f in result.findings}
    assert (
        verdicts["/health/detailed"] == "failing" and verdicts["DatabaseConnections"] == "failing"
    )
    assert result.decision and result.decision.decided_by == "bob"


async def test_rejection_ends_cleanly_and_changes_nothing(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    fakes = FakeSystems(roster)
    async with running(ts_env, [DatabaseFailover], fakes.activities()) as queue:
        handle = await start(ts_env, queue, failover_input())
        await until(handle, gate_open)
        await handle.execute_update(
            DatabaseFailover.reject,
            await signed(handle, "bob", approve=False, reason="DBA is on it"),
        )
        result: RunbookResult = await handle.result()
        await keep_history(handle, "db_failover_rejected")
    assert result.outcome == "rejected" and "DBA is on it" in result.summary
    assert "force_failover" not in fakes.calls
    assert fakes.notes[-1].kind == "rejected"


async def test_dry_run_returns_the_plan_and_changes_nothing(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    fakes = FakeSystems(roster)
    async with running(ts_env, [DatabaseFailover], fakes.activities()) as queue:
        handle = await start(ts_env, queue, failover_input(dry_run=True))
        result: RunbookResult = await handle.result()
        await keep_history(handle, "db_failover_dry_run")
    assert result.outcome == "dry_run"
    assert result.plan[0].startswith("Reboot prod-revenue-context-db with force-failover")
    assert "force_failover" not in fakes.calls and not fakes.notes


@pytest.mark.parametrize(
    ("severity", "path"),
    [
        ("P0", ["on-call", "engineering-manager", "cto"]),
        ("P1", ["on-call", "engineering-manager"]),
        ("P2", ["on-call"]),
        ("P3", ["on-call"]),
    ],
)
async def test_gate_escalates_along_the_path_then_ends_not_approved(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path], severity: str, path: list[str]
) -> None:
    fakes = FakeSystems(roster)
    async with running(ts_env, [DatabaseFailover], fakes.activities()) as queue:
        handle = await start(ts_env, queue, failover_input(severity=severity))
        result: RunbookResult = await handle.result()  # skips every level's response time
        # P3 opens a ticket instead of paging: recorded beside the P3 run that paged.
        name = "P3_ticket" if severity == "P3" else severity
        await keep_history(handle, f"db_failover_gate_timed_out_{name}")
    assert result.outcome == "not_approved" and "nothing was changed" in result.summary
    assert "force_failover" not in fakes.calls
    opened = [s for s in result.timeline if " opened for " in s.name or "escalated to" in s.name]
    assert [s.name.split()[-1] for s in opened] == path
    minutes = {"P0": 15, "P1": 60, "P2": 240, "P3": None}[severity]
    gaps = [round((b.started_at - a.started_at).total_seconds() / 60) for a, b in pairwise(opened)]
    assert gaps == [minutes] * (len(path) - 1)
    kinds = [n.kind for n in fakes.notes]
    assert kinds == ["approval_request"] + ["escalation"] * (len(path) - 1) + ["rejected"]
    [record] = fakes.incidents
    [gate] = record.gates  # missed its SLA: nobody answered
    assert (gate.met, gate.answered_at, gate.level, gate.severity) == (
        False,
        None,
        path[-1],
        severity,
    )
    assert record.kind == "recommend_only" and record.mitigated_at is None
    if severity == "P3":  # runbook.md: P3 goes to the ticket queue; nobody is paged
        assert not fakes.pages and len(fakes.tickets) == 1
        [ticket] = fakes.tickets.values()
        assert "approval needed" in ticket.title and "runbook approve" in ticket.text
        assert record.ticket and record.ticket.endswith("/issues/1")
        assert any(s.name == "ticket" and record.ticket in s.detail for s in result.timeline)
        return
    assert not fakes.tickets
    assert [p.action for p in fakes.pages] == ["trigger"] * len(path) + ["resolve"]
    assert len({p.dedup_key for p in fakes.pages}) == 1  # one alert, escalated, then resolved


async def test_failing_action_is_notified_and_fails_the_run(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    fakes = FakeSystems(roster, failover_error="RDS said no")
    async with running(ts_env, [DatabaseFailover], fakes.activities()) as queue:
        handle = await start(ts_env, queue, failover_input())
        await until(handle, gate_open)
        await handle.execute_update(DatabaseFailover.approve, await signed(handle, "bob"))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        status = await handle.query(DatabaseFailover.status)
        await keep_history(handle, "db_failover_action_failed")
    assert "RDS said no" in str(failed.value.cause)
    assert fakes.notes[-1].kind == "failed" and "RDS said no" in fakes.notes[-1].text
    assert status.outcome == "failed"
    assert [s.outcome for s in status.timeline if s.name == "reboot with force-failover"] == [
        "failed"
    ]


async def test_not_multi_az_is_refused_without_a_gate(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    fakes = FakeSystems(roster, multi_az=False)
    async with running(ts_env, [DatabaseFailover], fakes.activities()) as queue:
        handle = await start(ts_env, queue, failover_input())
        result: RunbookResult = await handle.result()
        await keep_history(handle, "db_failover_refused_not_multi_az")
    assert result.outcome == "refused" and "not Multi-AZ" in result.summary
    assert "force_failover" not in fakes.calls


async def test_invalid_decisions_are_refused(
    dev_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    # On the dev server: the time-skipping server loses track of rejected updates.
    fakes = FakeSystems(roster, release_wait=asyncio.Event())
    async with running(dev_env, [DatabaseFailover], fakes.activities()) as queue:
        handle = await start(dev_env, queue, failover_input())
        await until(handle, gate_open)
        with pytest.raises(WorkflowUpdateFailedError) as self_approval:
            await handle.execute_update(DatabaseFailover.approve, await signed(handle, "alice"))
        assert "second person" in str(self_approval.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as nameless:
            await handle.execute_update(DatabaseFailover.approve, Approval(approver=" "))
        assert "approver" in str(nameless.value.cause)
        # A signal cannot be refused to its sender: it is recorded in the timeline instead.
        await handle.signal(DatabaseFailover.approve_signal, await signed(handle, "alice"))
        await until(handle, lambda s: any(t.outcome == "refused" for t in s.timeline))
        await handle.signal(DatabaseFailover.approve_signal, await signed(handle, "carol"))
        await until(handle, lambda s: s.phase == "verify")
        with pytest.raises(WorkflowUpdateFailedError) as closed:
            await handle.execute_update(
                DatabaseFailover.approve,
                Approval(approver="dave", signature="x", expires_at=datetime.now(UTC)),
            )
        assert fakes.release_wait
        fakes.release_wait.set()
        result: RunbookResult = await handle.result()
    assert result.outcome == "completed" and result.decision
    assert result.decision.decided_by == "carol"
    assert "no approval gate is open" in str(closed.value.cause)


async def test_started_with_empty_input_uses_the_runbook_defaults(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    fakes = FakeSystems(roster)
    async with running(ts_env, [DatabaseFailover], fakes.activities()) as queue:
        handle = await ts_env.client.start_workflow(
            "DatabaseFailover",
            {},
            id="db-failover/production/prod-revenue-context-db",  # the id naming it
            task_queue=queue,
            id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
        )
        status = await until(handle, gate_open)
    assert status.resource == "prod-revenue-context-db" and status.severity == "P1"
    assert status.pending_gate and status.pending_gate.requested_by == "temporal-ui"


async def test_alarm_storm_is_one_timeline_line_with_count(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    fakes = FakeSystems(roster)
    async with running(ts_env, [DatabaseFailover], fakes.activities()) as queue:
        handle = await start(ts_env, queue, failover_input())
        await until(handle, gate_open)
        now = datetime.now(UTC)
        for _ in range(5):
            await handle.signal(
                "alarm", AlarmDelivery(source="cloudwatch", alarm="db-cpu-high", received_at=now)
            )
        await handle.signal(
            "alarm",
            AlarmDelivery(source="cloudwatch", alarm="db-cpu-high", state="OK", received_at=now),
        )
        status = await until(handle, lambda s: any("OK" in t.name for t in s.timeline))
    alarm_lines = {t.name: t.detail for t in status.timeline if t.name.startswith("alarm")}
    assert list(alarm_lines) == ["alarm db-cpu-high ALARM", "alarm db-cpu-high OK"]
    assert alarm_lines["alarm db-cpu-high ALARM"].startswith("5x via cloudwatch")


@pytest.mark.parametrize(
    ("status", "ends"),
    [("rebooting", "available again on us-east-1a (the same AZ"), ("failing-over", "us-east-1b")],
)
async def test_wait_only_waits_for_what_is_under_way(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path], status: str, ends: str
) -> None:
    """A reboot or a modification without failover comes back in its own AZ: the wait takes
    that; a failover under way is waited for in the other AZ."""
    fakes = FakeSystems(roster, db_status=status)
    async with running(ts_env, [DatabaseFailover], fakes.activities()) as queue:
        handle = await start(ts_env, queue, failover_input())
        result: RunbookResult = await handle.result()
        if status == "rebooting":
            await keep_history(handle, "db_failover_wait_only_same_az")
    assert result.outcome == "completed" and ends in result.summary
    assert "force_failover" not in fakes.calls and fakes.calls.count("wait_available") == 1
    [plan] = [s.detail for s in result.timeline if s.name == "plan"]
    assert plan.startswith(f"prod-revenue-context-db is already {status}")


async def test_not_available_is_refused_without_a_gate(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    fakes = FakeSystems(roster, db_status="storage-full")
    async with running(ts_env, [DatabaseFailover], fakes.activities()) as queue:
        handle = await start(ts_env, queue, failover_input())
        result: RunbookResult = await handle.result()
        await keep_history(handle, "db_failover_refused_not_available")
    assert result.outcome == "refused" and "'storage-full'" in result.summary
    assert "force_failover" not in fakes.calls and fakes.notes[-1].kind == "failed"


async def test_sessions_idle_in_transaction_after_recovery_are_reported_as_a_leak(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    fakes = FakeSystems(roster, idle_count=7)
    async with running(ts_env, [DatabaseFailover], fakes.activities()) as queue:
        handle = await start(ts_env, queue, failover_input(leak_threshold=5))
        await until(handle, gate_open)
        await handle.execute_update(DatabaseFailover.approve, await signed(handle, "bob"))
        result: RunbookResult = await handle.result()
        await keep_history(handle, "db_failover_leak_reported")
    assert result.outcome == "completed"
    assert "7 sessions idle in transaction: look for a connection leak" in result.summary
    assert [s.detail for s in result.timeline if s.name == "connection leak"] == [
        "7 sessions idle in transaction"
    ]


async def test_healthy_database_fails_over_only_when_the_approver_says_so(
    dev_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    # On the dev server: the time-skipping server loses track of rejected updates.
    fakes = FakeSystems(roster, healthy=True)
    async with running(dev_env, [DatabaseFailover], fakes.activities()) as queue:
        handle = await start(dev_env, queue, failover_input())
        status = await until(handle, gate_open)
        gate = status.pending_gate
        assert gate and gate.summary.startswith("A failover is not indicated")
        assert "CPUUtilization 20% average (alarm at 80%)" in gate.summary
        assert [(p.name, p.word) for p in gate.params] == [("override", "healthy")]
        with pytest.raises(WorkflowUpdateFailedError) as plain:
            await handle.execute_update(DatabaseFailover.approve, await signed(handle, "bob"))
        assert "params.override: required" in str(plain.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as other:
            ask = await signed(handle, "bob", params={"override": "yes"})
            await handle.execute_update(DatabaseFailover.approve, ask)
        assert "allowed: healthy" in str(other.value.cause)
        assert "force_failover" not in fakes.calls
        ask = await signed(handle, "bob", params={"override": "healthy"})
        await handle.execute_update(DatabaseFailover.approve, ask)
        result: RunbookResult = await handle.result()
        await keep_history(handle, "db_failover_healthy_override")
    assert result.outcome == "completed" and fakes.calls.count("force_failover") == 1
    assert result.decision and result.decision.params == {"override": "healthy"}
    assert [s.detail for s in result.timeline if s.name == "override healthy"] == [
        "bob failed over a database that looks healthy"
    ]
