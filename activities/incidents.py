"""The incident log (runbook.md, "Post-Incident"): every run of every procedure, in the
project's own PostgreSQL (RUNBOOK_DATABASE_URL), never the database being failed over.

Writes are idempotent: the incident and each timeline event have natural keys, so a retried
activity rewrites the same rows instead of adding new ones.
"""

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from temporalio import activity

# Versioned migrations, applied in order once each; never edit one that has shipped.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE incidents (
            incident_id text PRIMARY KEY,
            workflow_id text NOT NULL,
            procedure text NOT NULL,
            severity text NOT NULL,
            trigger text NOT NULL,
            resource text NOT NULL,
            requested_by text NOT NULL,
            started_at timestamptz NOT NULL,
            ended_at timestamptz,
            first_approval_at timestamptz,
            mitigated_at timestamptz,
            outcome text NOT NULL,
            summary text NOT NULL,
            approvers text[] NOT NULL DEFAULT '{}',
            refusals text[] NOT NULL DEFAULT '{}',
            findings jsonb NOT NULL DEFAULT '[]',
            plan jsonb NOT NULL DEFAULT '[]',
            recorded_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX incidents_started ON incidents (started_at);
        CREATE TABLE incident_events (
            incident_id text NOT NULL REFERENCES incidents ON DELETE CASCADE,
            seq integer NOT NULL,
            name text NOT NULL,
            started_at timestamptz NOT NULL,
            ended_at timestamptz,
            outcome text NOT NULL,
            detail text NOT NULL,
            PRIMARY KEY (incident_id, seq)
        );
        """,
    ),
    # Whether the worker proved who started the run (a signed start); NULL: not checked
    # (the run ended before any gate, or was recorded before requesters were checked).
    (2, "ALTER TABLE incidents ADD COLUMN requester_proven boolean;"),
    # Hand-offs: the run that started this one, and the runs this one started (workflow ids).
    (
        3,
        "ALTER TABLE incidents ADD COLUMN started_by text, "
        "ADD COLUMN started text[] NOT NULL DEFAULT '{}';",
    ),
    # What the run was (KINDS), each gate's response time against the SLA (GateSla), and the
    # ticket a P3 run opened. Rows written before read NULL, '[]' and NULL.
    (
        4,
        """
        ALTER TABLE incidents ADD COLUMN kind text;
        ALTER TABLE incidents ADD COLUMN gates jsonb NOT NULL DEFAULT '[]';
        ALTER TABLE incidents ADD COLUMN ticket text;
        """,
    ),
]

# read_only: a procedure that never changes anything (triage, the scheduled checks);
# recommend_only: a procedure that may act, in a run where nothing was approved (nothing to
# do, a recommendation, an escalation, a dry run, a rejection);
# approved: a gate approved the action. Only an approved run that completed mitigated.
KINDS = ("read_only", "recommend_only", "approved")


class GateSla(BaseModel):
    """One gate against the severity's response time (runbook.md, "Response Time SLAs"):
    met when the first level answered within its time; an answer after an escalation, or
    none, missed it."""

    gate: str
    severity: str
    opened_at: datetime
    due_at: datetime  # the end of the first level
    answered_at: datetime | None = None  # None: nobody decided
    level: str  # the level that answered, or the last one asked
    met: bool
    approved: bool = False


class IncidentStep(BaseModel):
    name: str
    started_at: datetime
    ended_at: datetime | None = None
    outcome: str
    detail: str = ""


class IncidentRecord(BaseModel):
    incident_id: str
    workflow_id: str
    procedure: str
    severity: str
    trigger: str
    resource: str
    requested_by: str
    requester_proven: bool | None = None
    started_by: str | None = None
    started: list[str] = []
    started_at: datetime
    ended_at: datetime | None
    first_approval_at: datetime | None
    mitigated_at: datetime | None
    outcome: str
    summary: str
    approvers: list[str] = []
    refusals: list[str] = []
    findings: list[dict[str, Any]] = []
    plan: list[str] = []
    timeline: list[IncidentStep] = []
    kind: str | None = None  # one of KINDS; None in records made before kinds
    gates: list[GateSla] = []
    ticket: str | None = None  # the ticket's address, when the run opened one


class RecordResult(BaseModel):
    incident_id: str
    recorded: bool = True
    events: int = 0
    # P0/P1: how to get the post-mortem draft (rendered from the incident log on demand).
    # Histories recorded before the drafts moved into the database hold a file path here.
    postmortem: str | None = None


class MigrateResult(BaseModel):
    applied: list[int]
    version: int


UPSERT_INCIDENT = """
INSERT INTO incidents (incident_id, workflow_id, procedure, severity, trigger, resource,
    requested_by, requester_proven, started_by, started, started_at, ended_at,
    first_approval_at, mitigated_at, outcome, summary, approvers, refusals, findings, plan,
    kind, gates, ticket)
VALUES (%(incident_id)s, %(workflow_id)s, %(procedure)s, %(severity)s, %(trigger)s,
    %(resource)s, %(requested_by)s, %(requester_proven)s, %(started_by)s, %(started)s,
    %(started_at)s, %(ended_at)s,
    %(first_approval_at)s, %(mitigated_at)s, %(outcome)s, %(summary)s, %(approvers)s,
    %(refusals)s, %(findings)s, %(plan)s, %(kind)s, %(gates)s, %(ticket)s)
ON CONFLICT (incident_id) DO UPDATE SET
    requester_proven = EXCLUDED.requester_proven, started = EXCLUDED.started,
    ended_at = EXCLUDED.ended_at,
    first_approval_at = EXCLUDED.first_approval_at, mitigated_at = EXCLUDED.mitigated_at,
    outcome = EXCLUDED.outcome, summary = EXCLUDED.summary, approvers = EXCLUDED.approvers,
    refusals = EXCLUDED.refusals, findings = EXCLUDED.findings, plan = EXCLUDED.plan,
    kind = EXCLUDED.kind, gates = EXCLUDED.gates, ticket = EXCLUDED.ticket, recorded_at = now()
"""
UPSERT_EVENT = """
INSERT INTO incident_events (incident_id, seq, name, started_at, ended_at, outcome, detail)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (incident_id, seq) DO UPDATE SET name = EXCLUDED.name,
    started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at,
    outcome = EXCLUDED.outcome, detail = EXCLUDED.detail
"""


def migrate(database_url: str) -> MigrateResult:
    """Apply the migrations not applied yet, each in its own transaction, under a lock so
    two workers starting at once do not race."""
    import psycopg

    applied = []
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('runbook-migrations'))")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, sql in MIGRATIONS:
            if version not in done:
                conn.execute(sql)  # type: ignore[arg-type]
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
    return MigrateResult(applied=applied, version=max(v for v, _ in MIGRATIONS))


def save(database_url: str, record: IncidentRecord) -> int:
    import psycopg
    from psycopg.types.json import Jsonb

    values = record.model_dump(exclude={"timeline"})
    values["findings"] = Jsonb(record.findings)
    values["plan"] = Jsonb(record.plan)
    values["gates"] = Jsonb([g.model_dump(mode="json") for g in record.gates])
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        conn.execute(UPSERT_INCIDENT, values)
        with conn.cursor() as cur:
            cur.executemany(
                UPSERT_EVENT,
                [
                    (record.incident_id, seq, s.name, s.started_at, s.ended_at, s.outcome, s.detail)
                    for seq, s in enumerate(record.timeline)
                ],
            )
            # A shorter timeline than a previous write (never expected) must not leave extras.
            cur.execute(
                "DELETE FROM incident_events WHERE incident_id = %s AND seq >= %s",
                (record.incident_id, len(record.timeline)),
            )
    return len(record.timeline)


class IncidentNotFound(LookupError):
    """No incident, or several, match the id (prefix) asked for."""


def load(database_url: str, incident_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One incident by id or unique id prefix, with its events."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, connect_timeout=5, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT * FROM incidents WHERE incident_id LIKE %s ORDER BY started_at LIMIT 2",
            (incident_id.replace("%", "") + "%",),
        ).fetchall()
        if len(rows) != 1:
            found = "several incidents match" if rows else "no incident matches"
            raise IncidentNotFound(f"INCIDENT_ID: {found} {incident_id!r}")
        events = conn.execute(
            "SELECT * FROM incident_events WHERE incident_id = %s ORDER BY seq",
            (rows[0]["incident_id"],),
        ).fetchall()
    return rows[0], events


SEARCH = """
SELECT * FROM incidents
WHERE (%(since)s::timestamptz IS NULL OR started_at >= %(since)s)
  AND (%(procedure)s::text IS NULL OR procedure = %(procedure)s)
ORDER BY started_at DESC
"""


def search(
    database_url: str, since: datetime | None = None, procedure: str | None = None
) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, connect_timeout=5, row_factory=dict_row) as conn:
        return conn.execute(SEARCH, {"since": since, "procedure": procedure}).fetchall()


def _proven(proven: bool | None) -> str:
    if proven is None:
        return "not checked"
    return "proven: signed start" if proven else "not proven"


def postmortem_markdown(incident: dict[str, Any], events: list[dict[str, Any]]) -> str:
    """A draft for the humans: the facts filled in, the thinking left to them."""
    started, ended = incident["started_at"], incident["ended_at"]
    lines = [
        f"# Post-mortem (draft): {incident['procedure']} on {incident['resource']}",
        "",
        f"- Incident: `{incident['incident_id']}` (workflow `{incident['workflow_id']}`)",
        f"- Severity: {incident['severity']}; trigger: {incident['trigger']}; "
        f"requested by {incident['requested_by']} ({_proven(incident.get('requester_proven'))})",
        f"- Outcome: **{incident['outcome']}**",
        *_links(incident),
        *([f"- Ticket: {incident['ticket']}"] if incident.get("ticket") else []),
        "",
        "## Summary",
        "",
        incident["summary"],
        "",
        "## Impact window",
        "",
        f"- Runbook started: {started:%Y-%m-%d %H:%M:%S} UTC",
        f"- First approval: {_when(incident['first_approval_at'])}",
        f"- Mitigated: {_when(incident['mitigated_at'])}",
        f"- Ended: {_when(ended)}",
        "- Customer impact began: _to fill in_",
        "",
        "## What the diagnosis found",
        "",
        *[f"- **{f['check']}**: {f['verdict']}: {f['summary']}" for f in incident["findings"]],
        "",
        "## Actions and who approved them",
        "",
        *[f"- {step}" for step in incident["plan"]],
        f"- Approved by: {', '.join(incident['approvers']) or 'nobody'}",
        *[f"- Refused: {r}" for r in incident["refusals"]],
        "",
        "## Timeline (UTC)",
        "",
        "| time | step | outcome | detail |",
        "|---|---|---|---|",
        *[
            f"| {e['started_at']:%H:%M:%S} | {e['name']} | {e['outcome']} | "
            f"{e['detail'].replace('|', '/')} |"
            for e in events
        ],
        "",
        "## Root cause",
        "",
        "_To fill in._",
        "",
        "## Action items",
        "",
        "| action | owner | due |",
        "|---|---|---|",
        "| | | |",
        "",
        "## Runbook updates",
        "",
        "_What should change in the runbook after this incident?_",
        "",
    ]
    return "\n".join(lines)


def _links(incident: dict[str, Any]) -> list[str]:
    """Hand-offs, both ways (rows recorded before them have neither)."""
    lines = []
    if incident.get("started_by"):
        lines.append(f"- Started by: `{incident['started_by']}` (hand-off)")
    if incident.get("started"):
        lines.append(f"- Started: {', '.join(f'`{w}`' for w in incident['started'])}")
    return lines


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "-"


def render_postmortem(database_url: str, incident_id: str) -> str:
    """The draft of one incident, from the incident log as it is now."""
    return postmortem_markdown(*load(database_url, incident_id))


def postmortem_command(incident_id: str) -> str:
    return f"runbook postmortem {incident_id}"


class IncidentActivities:
    """Writes to the database only: the worker needs no writable disk (post-mortem drafts
    are rendered from the incident log by `runbook postmortem`)."""

    def __init__(self, database_url: str | None) -> None:
        self._url = database_url  # may carry a password: never logged or returned
        self._migrated = False

    @activity.defn(name="incidents.record")
    def record(self, record: IncidentRecord) -> RecordResult:
        if not self._url:
            return RecordResult(incident_id=record.incident_id, recorded=False)
        if not self._migrated:  # the worker migrates at start, unless the database was down
            migrate(self._url)
            self._migrated = True
        events = save(self._url, record)
        # runbook.md: a post-mortem for P0/P1
        draft = postmortem_command(record.incident_id) if record.severity in ("P0", "P1") else None
        return RecordResult(incident_id=record.incident_id, events=events, postmortem=draft)
