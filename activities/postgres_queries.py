"""The service's PostgreSQL, read-only diagnosis: slow statements (`pg_stat_statements`),
connections by state and the long-running queries (`pg_stat_activity`)."""

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field
from temporalio import activity

if TYPE_CHECKING:
    import psycopg

QUERY_CHARS = 300


class SlowQueriesRequest(BaseModel):
    limit: int = Field(10, ge=1, le=100)


class SlowQuery(BaseModel):
    query: str  # normalized by pg_stat_statements (constants are $1, $2...), truncated
    mean_exec_time_ms: float
    calls: int
    total_exec_time_ms: float


class SlowQueriesResult(BaseModel):
    available: bool
    queries: list[SlowQuery]
    note: str = ""


class ConnectionsRequest(BaseModel):
    # Active queries running longer than this are listed.
    long_running_seconds: float = Field(30.0, ge=0)
    limit: int = Field(10, ge=1, le=100)


class ActiveQuery(BaseModel):
    pid: int
    duration_seconds: float
    application_name: str
    query: str  # truncated


class ConnectionSummary(BaseModel):
    total: int
    by_state: dict[str, int]
    long_running: list[ActiveQuery]


SLOW_SQL = """
SELECT query, mean_exec_time, calls, total_exec_time
FROM pg_stat_statements
ORDER BY mean_exec_time DESC
LIMIT %s
"""
BY_STATE_SQL = """
SELECT coalesce(state, 'background'), count(*) FROM pg_stat_activity GROUP BY 1
"""
LONG_RUNNING_SQL = """
SELECT pid, extract(epoch FROM now() - query_start), coalesce(application_name, ''), query
FROM pg_stat_activity
WHERE state = 'active' AND pid <> pg_backend_pid()
  AND now() - query_start >= make_interval(secs => %s)
ORDER BY now() - query_start DESC
LIMIT %s
"""


def _short(query: str) -> str:
    query = " ".join(query.split())
    return query if len(query) <= QUERY_CHARS else query[:QUERY_CHARS] + "…"


class QueryActivities:
    def __init__(self, database_url: str) -> None:
        # Never log or return this URL: it may carry a password.
        self._url = database_url

    def _connect(self) -> "psycopg.Connection":
        import psycopg

        return psycopg.connect(self._url, connect_timeout=5, autocommit=True)

    @activity.defn(name="postgres.slow_queries")
    def slow_queries(self, req: SlowQueriesRequest) -> SlowQueriesResult:
        """runbook.md 2.4: top statements by mean execution time."""
        from psycopg.errors import UndefinedTable

        with self._connect() as conn:
            try:
                rows = conn.execute(SLOW_SQL, (req.limit,)).fetchall()
            except UndefinedTable:
                return SlowQueriesResult(
                    available=False,
                    queries=[],
                    note="pg_stat_statements is not installed: CREATE EXTENSION it",
                )
        return SlowQueriesResult(
            available=True,
            queries=[
                SlowQuery(
                    query=_short(q),
                    mean_exec_time_ms=round(float(mean), 2),
                    calls=int(calls),
                    total_exec_time_ms=round(float(total), 2),
                )
                for q, mean, calls, total in rows
            ],
        )

    @activity.defn(name="postgres.connections")
    def connections(self, req: ConnectionsRequest) -> ConnectionSummary:
        """runbook.md "Database Queries": active connections and long-running queries."""
        with self._connect() as conn:
            states = conn.execute(BY_STATE_SQL).fetchall()
            rows = conn.execute(LONG_RUNNING_SQL, (req.long_running_seconds, req.limit)).fetchall()
        by_state = {str(state): int(count) for state, count in states}
        return ConnectionSummary(
            total=sum(by_state.values()),
            by_state=by_state,
            long_running=[
                ActiveQuery(
                    pid=int(pid),
                    duration_seconds=round(float(seconds or 0), 1),
                    application_name=app,
                    query=_short(query or ""),
                )
                for pid, seconds, app, query in rows
            ],
        )
