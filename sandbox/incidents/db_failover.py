"""db-failover: the application's database exhausts its connections (leaked ones held
`idle in transaction` in the real PostgreSQL, 480 reported); a reboot of the instance, with
or without failover, heals it. Its RDS metrics show the incident's minutes."""

from __future__ import annotations

import math
import threading
import time

from sandbox.cloudwatch import INCIDENT_MINUTES
from sandbox.database import LeakedConnections
from sandbox.health import Check, check_postgres, down
from sandbox.state import APP_DB_INSTANCE, DB_INCIDENT
from sandbox.systems import Systems

POOL_EXHAUSTED = "connection pool exhausted: FATAL: sorry, too many clients already"
NORMAL_CONNECTIONS, INCIDENT_CONNECTIONS = 40, 480
MAX_REWRITE_MINUTES = 24 * 60


class DbFailover:
    def __init__(self, systems: Systems, database_url: str | None) -> None:
        self.systems = systems
        self.state = systems.state
        self._database_url = database_url
        self.leaks = LeakedConnections(database_url)
        # Serializes inject, heal and the simulator's reset, which do slow I/O outside
        # `state.lock`.
        self.lock = threading.Lock()

    def in_incident(self, identifier: str) -> bool:
        return identifier == APP_DB_INSTANCE and self.state.incident_active(DB_INCIDENT)

    def db_connections(self) -> float:
        """What the service reports holding (`db_connections_active`)."""
        if self.state.app_db_status() != "available":
            return 0
        return INCIDENT_CONNECTIONS if self.in_incident(APP_DB_INSTANCE) else NORMAL_CONNECTIONS

    def inject(self) -> None:
        with self.lock:
            with self.state.lock:
                self.state.incidents.setdefault(DB_INCIDENT, time.time())
            error = self.leaks.open(3)
            with self.state.lock:
                self.state.leaked_connections = self.leaks.count
                self.state.database_error = error
            self._rewrite_metrics(INCIDENT_MINUTES)

    def heal(self) -> None:
        with self.lock:
            with self.state.lock:
                started = self.state.incidents.pop(DB_INCIDENT, None)
            self._drop_connections()
            if started is not None:
                self._rewrite_metrics(_minutes_since(started) + INCIDENT_MINUTES)

    def on_rebooted(self, identifier: str, failover: bool) -> None:
        """A reboot of the app's database restarts PostgreSQL, whether or not it failed over."""
        if identifier == APP_DB_INSTANCE:
            self.heal()

    def started(self) -> float | None:
        """When the incident began (epoch), if it lasts."""
        with self.state.lock:
            return self.state.incidents.get(DB_INCIDENT)

    def forget(self, started: float | None) -> None:
        """After a reset (hold `lock`): the leaked connections closed, the incident's minutes
        gone from the metrics."""
        self._drop_connections()
        if started is not None:
            self._rewrite_metrics(_minutes_since(started) + INCIDENT_MINUTES)

    def close(self) -> None:
        self.leaks.close_all()

    def database_check(self) -> Check:
        """The database's line of `/health/detailed`."""
        if self.in_incident(APP_DB_INSTANCE):
            return down(POOL_EXHAUSTED)
        status = self.state.app_db_status()
        if status != "available":
            return down(f"{APP_DB_INSTANCE} is {status}: connection refused")
        return check_postgres(self._database_url)

    def _drop_connections(self) -> None:
        self.leaks.close_all()
        with self.state.lock:
            self.state.leaked_connections = 0
            self.state.database_error = None

    def _rewrite_metrics(self, minutes: int) -> None:
        if self.systems.aws is not None:
            self.systems.aws.metrics.rewrite(APP_DB_INSTANCE, min(minutes, MAX_REWRITE_MINUTES))


def _minutes_since(started: float) -> int:
    return math.ceil((time.time() - started) / 60)
