"""The incident log: real PostgreSQL for the activity and the queries, fake activities for
what the workflow records (the end-to-end test checks a real run's record)."""

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities import incidents
from activities.incidents import GateSla, IncidentActivities, IncidentRecord, IncidentStep
from cli.incidents import describe, per_procedure, sla_by_severity
from tests.fakes.approvers import signed, write_roster
from tests.fakes.systems import FakeSystems
from tests.temporal_env import gate_open, running, start, until
from workflows.db_failover import DatabaseFailover, DbFailoverInput
from workflows.models import RunbookStatus

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def runbook_db(stack_env: dict[str, str]) -> str:
    url = stack_env["RUNBOOK_DATABASE_URL"]
    incidents.migrate(url)
    return url


def a_record(severity: str = "P1", procedure: str = "db-failover") -> IncidentRecord:
    start = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    steps = [
        IncidentStep(name="started", started_at=start, ended_at=start, outcome="info"),
        IncidentStep(
            name="gate failover approved",
            started_at=start + timedelta(minutes=4),
            outcome="ok",
            detail="by bob",
        ),
        IncidentStep(
            name="reboot with force-failover",
            started_at=start + timedelta(minutes=5),
            outcome="ok",
            detail="a | b",
        ),
    ]
    return IncidentRecord(
        incident_id=str(uuid.uuid4()),
        workflow_id="db-failover/prod-revenue-context-db",
        procedure=procedure,
        severity=severity,
        trigger="cli",
        resource="prod-revenue-context-db",
        requested_by="alice",
        started_at=start,
        ended_at=start + timedelta(minutes=9),
        first_approval_at=start + timedelta(minutes=4),
        mitigated_at=start + timedelta(minutes=9),
        outcome="completed",
        summary="failed over to us-east-1b",
        approvers=["bob"],
        refusals=["'alice': second person"],
        findings=[{"check": "CPUUtilization", "verdict": "failing", "summary": "96%"}],
        plan=["Reboot with force-failover"],
        timeline=steps,
    )


def test_migrations_apply_once(runbook_db: str) -> None:
    again = incidents.migrate(runbook_db)
    assert again.applied == [] and again.version == incidents.MIGRATIONS[-1][0]


def test_a_retried_record_leaves_one_row_per_event(runbook_db: str) -> None:
    acts = IncidentActivities(runbook_db)
    record = a_record()
    first = ActivityEnvironment().run(acts.record, record)
    second = ActivityEnvironment().run(acts.record, record)  # the retry
    with psycopg.connect(runbook_db) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM incidents WHERE incident_id = %s", (record.incident_id,)
        ).fetchone()
        events = conn.execute(
            "SELECT count(*) FROM incident_events WHERE incident_id = %s", (record.incident_id,)
        ).fetchone()
    assert rows == (1,) and events == (3,)
    assert first.events == second.events == 3
    # P1: a draft, rendered from the database (the worker writes no file).
    assert first.postmortem == f"runbook postmortem {record.incident_id}"


def test_postmortem_draft_has_the_facts_and_empty_sections(runbook_db: str) -> None:
    record = a_record()
    incidents.save(runbook_db, record)
    text = incidents.render_postmortem(runbook_db, record.incident_id[:13])
    for expected in (
        "# Post-mortem (draft): db-failover on prod-revenue-context-db",
        "- First approval: 2026-11-26 03:04:00 UTC",
        "- Mitigated: 2026-11-26 03:09:00 UTC",
        "- **CPUUtilization**: failing: 96%",
        "- Approved by: bob",
        "- Refused: 'alice': second person",
        "| 03:05:00 | reboot with force-failover | ok | a / b |",
        "## Root cause\n\n_To fill in._",
        "## Action items",
    ):
        assert expected in text


def test_p2_gets_no_draft_and_search_filters(runbook_db: str) -> None:
    record = a_record(severity="P2", procedure=f"probe-{uuid.uuid4().hex[:6]}")
    result = ActivityEnvironment().run(IncidentActivities(runbook_db).record, record)
    assert result.postmortem is None
    found = incidents.search(runbook_db, procedure=record.procedure)
    assert [r["incident_id"] for r in found] == [record.incident_id]
    later = incidents.search(runbook_db, since=datetime(2030, 1, 1, tzinfo=UTC))
    assert record.incident_id not in [r["incident_id"] for r in later]
    with pytest.raises(incidents.IncidentNotFound, match="no incident"):
        incidents.load(runbook_db, "no-such-incident")


def test_a_database_that_is_down_is_a_retryable_failure() -> None:
    acts = IncidentActivities("postgresql://runbook@127.0.0.1:9/runbook")
    with pytest.raises(psycopg.OperationalError):
        ActivityEnvironment().run(acts.record, a_record())


# ---- what the workflow records ---------------------------------------------------------


async def run_failover(env: WorkflowEnvironment, fakes: FakeSystems) -> RunbookStatus:
    """A failover from an alarm, approved by bob; its status at the end."""
    async with running(env, [DatabaseFailover], fakes.activities()) as queue:
        inp = DbFailoverInput(requested_by="alice", trigger="alarm")
        handle = await start(env, queue, inp)
        await until(handle, gate_open)
        await handle.execute_update(DatabaseFailover.approve, await signed(handle, "bob"))
        try:
            await handle.result()
        finally:
            status = await handle.query(DatabaseFailover.status)
    return status


async def test_a_completed_run_is_recorded_with_approvers_and_times(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    fakes = FakeSystems(write_roster(tmp_path))
    status = await run_failover(ts_env, fakes)
    [record] = fakes.incidents
    assert (record.outcome, record.trigger, record.approvers) == ("completed", "alarm", ["bob"])
    assert record.first_approval_at and record.mitigated_at
    assert record.started_at <= record.first_approval_at <= record.mitigated_at
    # An acting run that verified its fix: it counts in MTTR; its gate was answered in time.
    assert record.kind == "approved"
    [gate] = record.gates
    assert gate.met and gate.approved and gate.answered_at and gate.answered_at <= gate.due_at
    assert record.findings[0]["check"] == "rds instance"
    assert status.timeline[-1].name == "incident log" and status.timeline[-1].outcome == "ok"


async def test_a_database_that_is_down_does_not_stop_the_remediation(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    # The first try and the first retry fail: the retry policy waits (5 s) and tries again.
    fakes = FakeSystems(write_roster(tmp_path), incident_log_failures=2)
    status = await run_failover(ts_env, fakes)
    log_steps = [(s.outcome, s.detail) for s in status.timeline if s.name == "incident log"]
    assert log_steps[0][0] == "failed" and "retrying until it is back" in log_steps[0][1]
    assert log_steps[-1][0] == "ok"
    assert fakes.calls.count("force_failover") == 1 and status.outcome == "completed"
    # The record written once the database was back tells the story too.
    assert any(s.name == "incident log" for s in fakes.incidents[0].timeline)


async def test_a_failed_run_is_recorded_as_failed(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    fakes = FakeSystems(write_roster(tmp_path), failover_error="RDS said no")
    with pytest.raises(WorkflowFailureError):
        await run_failover(ts_env, fakes)
    [record] = fakes.incidents
    assert record.outcome == "failed" and "RDS said no" in record.summary
    assert record.mitigated_at is None and record.approvers == ["bob"]


# ---- MTTR, kinds and the SLA in the report -------------------------------------------------


def gate(met: bool, severity: str = "P1") -> GateSla:
    opened = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    answered = opened + timedelta(minutes=10 if met else 70)
    return GateSla(
        gate="g",
        severity=severity,
        opened_at=opened,
        due_at=opened + timedelta(hours=1),
        answered_at=answered,
        level="on-call" if met else "engineering-manager",
        met=met,
        approved=True,
    )


def test_mttr_counts_only_mitigated_runs_and_the_sla_is_per_severity(runbook_db: str) -> None:
    name = f"probe-{uuid.uuid4().hex[:6]}"
    fixed = a_record(procedure=name).model_copy(update={"kind": "approved", "gates": [gate(True)]})
    late = a_record(procedure=name).model_copy(
        update={
            "incident_id": str(uuid.uuid4()),
            "kind": "approved",
            "outcome": "not_mitigated",
            "mitigated_at": None,
            "gates": [gate(False)],
        }
    )
    advice = a_record(procedure=name).model_copy(
        update={
            "incident_id": str(uuid.uuid4()),
            "kind": "recommend_only",
            "first_approval_at": None,
            "mitigated_at": None,
            "approvers": [],
        }
    )
    looked = advice.model_copy(update={"incident_id": str(uuid.uuid4()), "kind": "read_only"})
    for record in (fixed, late, advice, looked):
        incidents.save(runbook_db, record)
    rows = incidents.search(runbook_db, procedure=name)
    stats = per_procedure(rows)[name]
    assert (stats["incidents"], stats["mitigated"], stats["approved_not_mitigated"]) == (4, 1, 1)
    assert (stats["recommend_only"], stats["read_only"]) == (1, 1)
    assert stats["mttr_minutes"] == 9.0  # the mitigated run's only
    assert sla_by_severity(rows) == {"P1": {"met": 1, "missed": 1}}
    line = describe(name, stats)
    assert "1 mitigated (MTTR 9.0 min" in line and "1 recommend-only; 1 read-only" in line


def test_the_schema_change_migrates_an_existing_log_and_old_rows_read(
    stack_env: dict[str, str],
) -> None:
    server = stack_env["RUNBOOK_DATABASE_URL"]
    name = f"old_log_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = psycopg.conninfo.make_conninfo(server, dbname=name)
    try:
        with psycopg.connect(url) as conn:  # a log at version 2, with a row of that time
            conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for version, sql in incidents.MIGRATIONS[:2]:
                conn.execute(sql)  # type: ignore[arg-type]
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            old = a_record(procedure="old").model_dump(
                exclude={
                    "timeline",
                    "findings",
                    "plan",
                    "kind",
                    "gates",
                    "ticket",
                    "started_by",
                    "started",
                }
            )
            conn.execute(
                f"INSERT INTO incidents ({', '.join(old)}) VALUES "
                f"({', '.join('%(' + k + ')s' for k in old)})",
                old,
            )
        assert incidents.migrate(url).applied == [3, 4]
        [row] = incidents.search(url)
        assert (row["kind"], row["gates"], row["ticket"]) == (None, [], None)
        assert per_procedure([row])["old"]["mitigated"] == 1  # approved and completed
        assert incidents.render_postmortem(url, row["incident_id"]).startswith("# Post-mortem")
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
