"""The service's PostgreSQL: connection-leak and query checks (read-only)."""

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field
from temporalio import activity

if TYPE_CHECKING:
    import psycopg


class IdleInTransactionRequest(BaseModel):
    older_than_seconds: int = Field(0, ge=0)


class IdleInTransactionResult(BaseModel):
    count: int
    oldest_seconds: float | None


IDLE_IN_TRANSACTION_SQL = """
SELECT count(*), extract(epoch FROM max(now() - state_change))
FROM pg_stat_activity
WHERE state = 'idle in transaction'
  AND now() - state_change >= make_interval(secs => %s)
"""


class PostgresActivities:
    def __init__(self, database_url: str) -> None:
        # Never log or return this URL: it may carry a password.
        self._url = database_url

    def _connect(self) -> "psycopg.Connection":
        import psycopg

        return psycopg.connect(self._url, connect_timeout=5, autocommit=True)

    @activity.defn(name="postgres.idle_in_transaction")
    def idle_in_transaction(self, req: IdleInTransactionRequest) -> IdleInTransactionResult:
        with self._connect() as conn:
            row = conn.execute(IDLE_IN_TRANSACTION_SQL, (req.older_than_seconds,)).fetchone()
        count, oldest = row if row else (0, None)
        return IdleInTransactionResult(
            count=int(count), oldest_seconds=None if oldest is None else round(float(oldest), 1)
        )
