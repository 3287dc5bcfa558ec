"""runbook.md, "Common Commands" as one read-only run: what is wrong, and which procedure fits."""

from collections.abc import Awaitable
from typing import Any

from pydantic import BaseModel, Field
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.ecs import EcsActivities, ServicesRequest
    from activities.health import HealthActivities, HealthRequest
    from activities.kafka import KafkaActivities, LagRequest
    from activities.logs import LogErrorsRequest, LogsActivities
    from activities.postgres_queries import ConnectionsRequest, QueryActivities

from workflows.base import RunbookWorkflow
from workflows.diagnosis import (
    judge_connections,
    judge_health,
    judge_lag,
    judge_logs,
    judge_services,
    read,
)
from workflows.models import MAX_RESOURCE, Finding, Resource, RunbookInput, RunbookResult

CONNECTIONS_HIGH = 400  # the `db-connections-high` alarm's threshold


class TriageInput(RunbookInput):
    cluster: str = Field("prod-revenue-context", min_length=1, max_length=MAX_RESOURCE)
    services: list[Resource] = Field(
        ["api", "context-engine", "orchestration-engine"], min_length=1, max_length=10
    )
    log_minutes: int = Field(10, ge=1, le=24 * 60)
    long_running_seconds: float = Field(30.0, ge=0)
    consumer_group: str = Field("context_engine_group", min_length=1, max_length=MAX_RESOURCE)
    topic: str = Field("signals.raw", min_length=1, max_length=MAX_RESOURCE)
    lag_threshold: int = Field(1000, ge=0)
    check_timeout_seconds: float = Field(30.0, ge=1, le=600)


class Suggestion(BaseModel):
    procedure: str
    reason: str


def suggest(inp: TriageInput, findings: dict[str, Finding]) -> list[Suggestion]:
    """Pure: the procedures that fit the findings, most urgent first."""

    def bad(name: str) -> bool:
        return name in findings and findings[name].verdict in ("degraded", "failing")

    out: list[Suggestion] = []
    health = findings.get("/health/detailed")
    conns = findings.get("database connections")
    total = int((conns.data or {}).get("total", 0)) if conns else 0
    if (health and health.verdict == "failing" and "database" in health.summary) or (
        total >= CONNECTIONS_HIGH
    ):
        out.append(
            Suggestion(
                procedure="db-failover", reason=health.summary if health else f"{total} connections"
            )
        )
    if bad("consumer lag") or bad("/health/workers") or bad("logs /ecs/production/context-engine"):
        reason = findings.get("consumer lag") or findings.get("/health/workers")
        out.append(
            Suggestion(procedure="kafka-lag", reason=reason.summary if reason else "worker errors")
        )
    if bad("logs /ecs/production/api") or _service_bad(findings, "api"):
        reason = findings.get("logs /ecs/production/api")
        out.append(
            Suggestion(procedure="api-errors", reason=reason.summary if reason else "api tasks")
        )
    return out


def _service_bad(findings: dict[str, Finding], service: str) -> bool:
    ecs = findings.get("ecs services")
    if ecs is None:
        return False
    counts = (ecs.data or {}).get(service) or {}
    return counts.get("running", 0) < counts.get("desired", 0)


@workflow.defn(name="Triage")
class Triage(RunbookWorkflow):
    procedure = "triage"

    @workflow.run
    async def run(self, inp: TriageInput) -> RunbookResult:
        self.begin(inp, inp.cluster)
        self.tag(inp.severity)
        timeout = inp.check_timeout_seconds
        checks: list[Awaitable[tuple[Finding, Any]]] = [
            self.check(
                "ecs services",
                read(
                    EcsActivities.describe_services,
                    ServicesRequest(cluster=inp.cluster, services=inp.services),
                    timeout,
                ),
                judge_services,
            ),
            self.check(
                "database connections",
                read(
                    QueryActivities.connections,
                    ConnectionsRequest(long_running_seconds=inp.long_running_seconds),
                    timeout,
                ),
                judge_connections,
            ),
            self.check(
                "/health/detailed",
                read(HealthActivities.check, HealthRequest(path="/health/detailed"), timeout),
                judge_health,
            ),
            self.check(
                "/health/workers",
                read(HealthActivities.check, HealthRequest(path="/health/workers"), timeout),
                judge_health,
            ),
            self.check(
                "consumer lag",
                read(
                    KafkaActivities.consumer_lag,
                    LagRequest(
                        group=inp.consumer_group,
                        topics=[inp.topic],
                        sample_seconds=0,
                        timeout_seconds=min(timeout / 3, 10),
                    ),
                    timeout,
                ),
                judge_lag(inp.lag_threshold),
            ),
            *(
                self.check(
                    f"logs /ecs/production/{service}",
                    read(
                        LogsActivities.recent_errors,
                        LogErrorsRequest(
                            log_group=f"/ecs/production/{service}",
                            minutes=inp.log_minutes,
                            terms=["ERROR", "CRITICAL"],
                        ),
                        timeout,
                    ),
                    judge_logs,
                )
                for service in inp.services
            ),
        ]
        findings = [f for f, _ in await self.check_all(*checks)]
        self.set_phase("plan")
        suggestions = suggest(inp, {f.check: f for f in findings})
        commands = [f"runbook start {s.procedure} --severity {inp.severity}" for s in suggestions]
        if suggestions:
            first = suggestions[0]
            summary = f"Suggested: {first.procedure} ({first.reason}) -> {commands[0]}"
        else:
            bad = [f.check for f in findings if f.verdict != "ok"]
            summary = "No procedure fits" + (
                f"; look at: {', '.join(bad)}" if bad else ": all checks ok"
            )
        for suggestion, command in zip(suggestions, commands, strict=True):
            self.record(
                f"suggest {suggestion.procedure}", "info", f"{suggestion.reason} -> {command}"
            )
        return self.finish("completed", summary, findings, commands)
