"""The sandbox's mutable state: one object, one lock, read by every thread."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

DB_INCIDENT = "db-failover"
APP_DB_INSTANCE = "prod-revenue-context-db"
DEFAULT_VERSION = "v1.4.2"


@dataclass
class DbInstanceSim:
    """What the sandbox knows about an RDS instance that moto does not model."""

    multi_az: bool
    primary_az: str
    standby_az: str | None
    status: str = "available"
    reboots: int = 0
    failovers: int = 0


@dataclass
class SandboxState:
    """Everything the control API reports; guard every access with `lock`."""

    heal_delay: float
    default_heal_delay: float = field(init=False)
    version: str = DEFAULT_VERSION
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Bumped by reset, so a reboot timer started before a reset does nothing.
    generation: int = 0
    incidents: dict[str, float] = field(default_factory=dict)  # name -> start (epoch)
    instances: dict[str, DbInstanceSim] = field(default_factory=dict)
    seeded: dict[str, DbInstanceSim] = field(default_factory=dict)
    reboot_count: int = 0
    failover_count: int = 0
    leaked_connections: int = 0
    database_error: str | None = None
    slack_messages: list[Any] = field(default_factory=list)
    slack_fail_status: int = 200
    slack_rejected: int = 0
    # The Slack Web API twin: the bot token it takes, and the calls it answered.
    slack_bot_token: str | None = None
    slack_calls: list[Any] = field(default_factory=list)
    pagerduty_events: list[Any] = field(default_factory=list)
    # The Slack app's messages by ts as they are now, and the `ok: false` error the Web API
    # answers with (None: none; sandbox/slack.py).
    slack_app_messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    slack_api_error: str | None = None
    # The GitHub issues twin's (sandbox/github.py); kept across resets: numbers never repeat.
    github_issues: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.default_heal_delay = self.heal_delay

    def seed_instance(self, identifier: str, sim: DbInstanceSim) -> None:
        with self.lock:
            self.seeded[identifier] = DbInstanceSim(**asdict(sim))
            self.instances[identifier] = sim

    def incident_active(self, name: str = DB_INCIDENT) -> bool:
        with self.lock:
            return name in self.incidents

    def app_db_status(self) -> str:
        """Status of the application's database; `available` when AWS is not simulated."""
        with self.lock:
            sim = self.instances.get(APP_DB_INSTANCE)
            return sim.status if sim else "available"

    def clear(self) -> None:
        """Back to the state right after start-up (caller undoes side effects)."""
        with self.lock:
            self.generation += 1
            self.heal_delay = self.default_heal_delay
            self.incidents.clear()
            self.instances = {k: DbInstanceSim(**asdict(v)) for k, v in self.seeded.items()}
            self.reboot_count = self.failover_count = 0
            self.leaked_connections = 0
            self.database_error = None
            self.slack_messages.clear()
            self.slack_fail_status = 200
            self.slack_rejected = 0
            self.slack_calls.clear()
            self.pagerduty_events.clear()
            self.slack_app_messages.clear()
            self.slack_api_error = None

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            app_db = self.instances.get(APP_DB_INSTANCE)
            return {
                "version": self.version,
                "heal_delay": self.heal_delay,
                "incidents": {name: name in self.incidents for name in (DB_INCIDENT,)},
                "incident_started": {
                    name: _iso(started) for name, started in self.incidents.items()
                },
                "reboot_count": self.reboot_count,
                "failover_count": self.failover_count,
                "db_instance": APP_DB_INSTANCE,
                "db_status": app_db.status if app_db else None,
                "primary_az": app_db.primary_az if app_db else None,
                "standby_az": app_db.standby_az if app_db else None,
                "rds": {name: asdict(sim) for name, sim in self.instances.items()},
                "leaked_connections": self.leaked_connections,
                "database_error": self.database_error,
                "slack_message_count": len(self.slack_messages),
                "slack_fail_status": self.slack_fail_status,
                "slack_rejected_count": self.slack_rejected,
                "pagerduty_event_count": len(self.pagerduty_events),
            }


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
