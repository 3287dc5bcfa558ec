"""runbook.md, "Common Commands" as one read-only run: what is wrong, and which procedure fits.

Triage can name each of the seven procedures, posts its verdict to Slack and offers to start
what it names: the verdict carries the exact `runbook start ...` command, and `runbook start
--from <triage workflow id>` starts it as a signed start of the person who runs it (the
triage run itself starts nothing: a start needs a proven requester).
"""

from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.acm import AcmActivities, Certificates, ListCertificatesRequest
    from activities.ecs import EcsActivities, ServicesRequest, ServicesResult, TasksRequest
    from activities.health import HealthActivities, HealthRequest
    from activities.kafka import KafkaActivities, LagRequest
    from activities.logs import LogErrorsRequest, LogsActivities
    from activities.postgres_queries import ConnectionsRequest, QueryActivities
    from activities.spend import SpendActivities, SpendReading, SpendReadRequest

from workflows.base import RunbookWorkflow
from workflows.cert_renewal import verdict as cert_verdict
from workflows.diagnosis import (
    judge_connections,
    judge_health,
    judge_lag,
    judge_logs,
    judge_services,
    judge_tasks,
    read,
    recent_deploy,
)
from workflows.models import MAX_RESOURCE, Finding, Resource, RunbookInput, RunbookResult

CONNECTIONS_HIGH = 400  # the `db-connections-high` alarm's threshold
RECENT_DEPLOY = timedelta(hours=1)  # runbook.md 5, When to Rollback
# Runs recorded before triage named every procedure replay without the new checks.
ALL_PROCEDURES = "triage-names-every-procedure"


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
    # runbook.md 7 and the daily check: a certificate this close to expiry is renewed.
    days_before_expiry: int = Field(30, ge=1, le=365)


class Suggestion(BaseModel):
    procedure: str
    reason: str
    # `--set` values the start needs (the resource it names), e.g. {"domain": "api.x.com"}.
    sets: dict[str, str] = {}

    def command(self, severity: str) -> str:
        sets = "".join(f" --set {k}={v}" for k, v in self.sets.items())
        return f"runbook start {self.procedure}{sets} --severity {severity}"


def suggest(
    inp: TriageInput, findings: dict[str, Finding], every: bool = False
) -> list[Suggestion]:
    """Pure: the procedures that fit the findings, most urgent first. `every`: the checks
    of all seven procedures ran (runs recorded before named three)."""

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
    if every:
        out += _deploy_and_memory(inp, findings)
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
    if every:
        out += _budget_and_certificates(findings)
    return out


def _deploy_and_memory(inp: TriageInput, findings: dict[str, Finding]) -> list[Suggestion]:
    out: list[Suggestion] = []
    health, deploy = findings.get("/health"), findings.get("recent deploy")
    smoke = health is not None and "smoke test" in str(health.data.get("body") or "")
    if health is not None and health.verdict == "failing" and (deploy or smoke):
        why = deploy.summary if deploy else health.summary
        out.append(Suggestion(procedure="rollback", reason=f"/health {health.summary}; {why}"))
    for service in inp.services:
        tasks = findings.get(f"ecs {service} tasks")
        reasons = (tasks.data.get("crash_reasons") or {}) if tasks else {}
        oom = sum(n for reason, n in reasons.items() if "OutOfMemory" in reason)
        if oom:
            out.append(
                Suggestion(
                    procedure="high-memory",
                    reason=f"{oom} {service} task(s) stopped out of memory",
                    sets={"service": service},
                )
            )
    return out


def _budget_and_certificates(findings: dict[str, Finding]) -> list[Suggestion]:
    out: list[Suggestion] = []
    spend = findings.get("llm spend")
    if spend is not None and spend.verdict == "failing":
        out.append(Suggestion(procedure="llm-budget", reason=spend.summary))
    certs = findings.get("certificates")
    for domain, why in ((certs.data.get("renew") or {}) if certs else {}).items():
        out.append(Suggestion(procedure="cert-renewal", reason=why, sets={"domain": domain}))
    return out


def judge_spend(reading: SpendReading) -> Finding:
    if reading.budget is None:
        summary = f"{reading.spend:.2f} USD spent today; budget unknown ({reading.detail})"
        return Finding(check="llm spend", verdict="unavailable", summary=summary)
    share = reading.spend / reading.budget if reading.budget else 1.0
    verdict = "failing" if share >= 1 else "degraded" if share >= 0.9 else "ok"
    summary = f"{reading.spend:.2f} of {reading.budget:.2f} USD today ({share:.0%})"
    if verdict == "failing":
        summary += ": budget exhausted"
    return Finding(check="llm spend", verdict=verdict, summary=summary, data=reading.model_dump())


def judge_certificates(now: datetime, days_before_expiry: int):  # type: ignore[no-untyped-def]
    def judge(found: Certificates) -> Finding:
        renew: dict[str, str] = {}
        for cert in found.certificates:
            judged, why = cert_verdict(cert, now, days_before_expiry)
            if judged in ("expired", "expiring"):
                renew.setdefault(cert.domain, f"certificate {cert.domain} {why}")
        summary = "; ".join(renew.values()) or f"{len(found.certificates)} certificates ok"
        return Finding(
            check="certificates",
            verdict="failing" if renew else "ok",
            summary=summary,
            data={"renew": renew},
        )

    return judge


def judge_recent_deploy(now: datetime, services: ServicesResult | None) -> Finding:
    """A deploy in the last hour (runbook.md 5): not a fault alone; with /health failing, the
    suspect."""
    found = [
        f"{svc.name} {why}"
        for svc in (services.services if services else [])
        if (why := recent_deploy(svc, now, RECENT_DEPLOY))
    ]
    if not found:
        return Finding(check="recent deploy", verdict="ok", summary="none in the last hour")
    return Finding(check="recent deploy", verdict="degraded", summary="; ".join(found))


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
        every = workflow.patched(ALL_PROCEDURES)
        if every:
            checks += self._more_checks(inp)
        results = await self.check_all(*checks)
        findings = [f for f, _ in results]
        if every:
            findings.append(judge_recent_deploy(workflow.now(), results[0][1]))
        self.set_phase("plan")
        suggestions = suggest(inp, {f.check: f for f in findings}, every)
        commands = [s.command(inp.severity) for s in suggestions]
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
        if every:
            await self._post_verdict(summary, suggestions, commands)
        return self.finish("completed", summary, findings, commands)

    def _more_checks(self, inp: TriageInput) -> list[Awaitable[tuple[Finding, Any]]]:
        """What points at the four procedures the first checks cannot: a bad deploy, memory,
        the LLM budget and certificates (read-only, like the rest)."""
        timeout, now = inp.check_timeout_seconds, workflow.now()
        return [
            self.check(
                "/health",
                read(HealthActivities.check, HealthRequest(path="/health"), timeout),
                judge_health,
            ),
            *(
                self.check(
                    f"ecs {service} tasks",
                    read(
                        EcsActivities.list_tasks,
                        TasksRequest(cluster=inp.cluster, service=service),
                        timeout,
                    ),
                    judge_tasks,
                )
                for service in inp.services
            ),
            self.check(
                "llm spend",
                read(
                    SpendActivities.read,
                    SpendReadRequest(date=f"{now:%Y-%m-%d}"),
                    timeout,
                ),
                judge_spend,
            ),
            self.check(
                "certificates",
                read(AcmActivities.list_certificates, ListCertificatesRequest(), timeout),
                judge_certificates(now, inp.days_before_expiry),
            ),
        ]

    async def _post_verdict(
        self, summary: str, suggestions: list[Suggestion], commands: list[str]
    ) -> None:
        """To Slack, whoever started it (a P0 health alarm too): what it found, what fits,
        and how to start it."""
        me = workflow.info().workflow_id
        lines = [
            f"{s.procedure}: {s.reason}\n  {c}" for s, c in zip(suggestions, commands, strict=True)
        ]
        if suggestions:
            lines.append(f"Start the first from this triage: runbook start --from {me}")
        kind = "escalation" if suggestions else "info"
        title = f"triage: {suggestions[0].procedure if suggestions else 'nothing to run'}"
        await self.notify(kind, title, "\n".join([summary, *lines]), {"triage": me})
