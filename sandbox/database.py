"""Real PostgreSQL effects of the db incident: connections leaked `idle in transaction`."""

from __future__ import annotations

import threading

import psycopg

LEAK_APPLICATION_NAME = "revenue-context-api"


class LeakedConnections:
    """Connections that began a transaction and never finished it, like a leaking pool."""

    def __init__(self, database_url: str | None) -> None:
        self._url = database_url
        self._lock = threading.Lock()
        self._conns: list[psycopg.Connection] = []

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._conns)

    def open(self, count: int = 3) -> str | None:
        """Open up to `count` leaks in total; returns the error if PostgreSQL refused."""
        if not self._url:
            return None
        try:
            while self.count < count:
                conn = psycopg.connect(
                    self._url, connect_timeout=2, application_name=LEAK_APPLICATION_NAME
                )
                conn.execute("SELECT 1")  # psycopg sent BEGIN first: now idle in transaction
                with self._lock:
                    self._conns.append(conn)
        except psycopg.Error as exc:
            return str(exc).strip() or type(exc).__name__
        return None

    def close_all(self) -> int:
        """What a failover does to every client connection; returns how many were open."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        return len(conns)
