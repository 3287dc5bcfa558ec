"""Which runbook an alarm starts, at which severity, for which resource.

The defaults are the runbook's alarms (runbook.md, "Symptoms"); a JSON file named by
`RUNBOOK_ALARM_ROUTES` adds or replaces routes by alarm name (`null` removes one):

    {"prod-db-cpu-high": {"procedure": "db-failover", "severity": "P0",
                          "resource_keys": ["DBInstanceIdentifier"]}}

Procedures are named by their CLI name and looked up in `workflows.registry.PROCEDURES`
when an alarm arrives, so a procedure installed later is picked up by the next worker and
webhook deploy, and an alarm for one that is not installed is refused with 422.
"""

import json
import re
from pathlib import Path

from pydantic import BaseModel, Field, TypeAdapter

from workflows.models import Severity

DB = ["DBInstanceIdentifier", "db_instance_id"]
SERVICE = ["ServiceName", "service", "ecs_service"]


class AlarmRoute(BaseModel):
    procedure: str = Field(min_length=1)
    severity: Severity
    # CloudWatch dimension names / Alertmanager label names, tried in order, that name the
    # resource; none present: the procedure's default resource.
    resource_keys: list[str] = []


DEFAULT_ROUTES: dict[str, AlarmRoute] = {
    # 1. Database Failover
    "db-cpu-high": AlarmRoute(procedure="db-failover", severity="P1", resource_keys=DB),
    "db-connections-high": AlarmRoute(procedure="db-failover", severity="P1", resource_keys=DB),
    # 2. Kafka Consumer Lag; `/health/workers` 503 is its health-check symptom
    "kafka-lag-high": AlarmRoute(
        procedure="kafka-lag", severity="P2", resource_keys=["ConsumerGroup", "consumergroup"]
    ),
    "health-workers-failing": AlarmRoute(procedure="kafka-lag", severity="P2"),
    # 3. API Error Rate Spike (customers see failures)
    "api-error-rate-high": AlarmRoute(procedure="api-errors", severity="P1", resource_keys=SERVICE),
    # 4. LLM Budget Exhaustion (email generation stopped)
    "llm-budget-exhausted": AlarmRoute(procedure="llm-budget", severity="P1"),
    # 6. High Memory Usage
    "ecs-memory-high": AlarmRoute(procedure="high-memory", severity="P2", resource_keys=SERVICE),
    # 7. Certificate Expiration
    "cert-expiring": AlarmRoute(procedure="cert-renewal", severity="P2"),
    # Health checks that do not name a procedure: the read-only triage suggests one.
    # `/health` down is the whole API down (P0); `/health/detailed` 503 is a dependency.
    "health-check-failing": AlarmRoute(procedure="triage", severity="P0"),
    "health-detailed-failing": AlarmRoute(procedure="triage", severity="P1"),
}

_ROUTES_FILE = TypeAdapter(dict[str, AlarmRoute | None])


def load_routes(path: Path | None) -> dict[str, AlarmRoute]:
    """The defaults with the file's routes over them; a bad file is an error at start-up."""
    routes = dict(DEFAULT_ROUTES)
    if path is None:
        return routes
    for name, route in _ROUTES_FILE.validate_json(Path(path).read_bytes()).items():
        if route is None:
            routes.pop(name, None)
        else:
            routes[name] = route
    return routes


def _norm(key: str) -> str:
    """`DBInstanceIdentifier`, `dbinstance_identifier` and `db-instance-identifier` match."""
    return re.sub(r"[^a-z0-9]", "", key.lower())


def find_resource(route: AlarmRoute, *sources: dict[str, str]) -> str | None:
    """The first of the route's keys found in the dimensions / labels, else None."""
    found = {_norm(k): v for source in sources for k, v in source.items()}
    for key in route.resource_keys:
        value = found.get(_norm(key))
        if value:
            return value
    return None


def describe_routes(routes: dict[str, AlarmRoute], installed: set[str]) -> list[dict[str, object]]:
    return [
        {"alarm": name, **route.model_dump(), "installed": route.procedure in installed}
        for name, route in sorted(routes.items())
    ]


def routes_json(routes: dict[str, AlarmRoute]) -> str:
    return json.dumps({k: v.model_dump() for k, v in routes.items()}, indent=2)
