"""Pieces the diagnosis-heavy procedures share (kafka-lag, api-errors, triage): reading with
a per-check timeout, judges that turn an activity's result into a finding, and the scale
step both remediations end with."""

from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.ecs import (
        EcsActivities,
        EcsService,
        ScaleRequest,
        ServicesRequest,
        ServicesResult,
        TasksResult,
        WaitRunningRequest,
    )
    from activities.health import HealthResult
    from activities.kafka import DlqPeekResult, LagResult
    from activities.logs import LogErrorsResult
    from activities.postgres_queries import ConnectionSummary, SlowQueriesResult

from workflows.base import MUTATE_RETRY, MUTATION_HEARTBEAT, RunbookWorkflow
from workflows.models import Finding

# Diagnosis checks retry once: a check that still fails is reported "unavailable" quickly.
CHECK_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=2)
ERRORS_FAILING = 50  # more ERROR lines than this in the window is a failing service


def read(method: Any, arg: Any, timeout_seconds: float, heartbeat: bool = False) -> Awaitable[Any]:
    """One read-only activity with its own timeout."""
    return workflow.execute_activity_method(
        method,
        arg,
        start_to_close_timeout=timedelta(seconds=timeout_seconds),
        heartbeat_timeout=timedelta(seconds=max(timeout_seconds, 10)) if heartbeat else None,
        retry_policy=CHECK_RETRY,
    )


async def scale_and_wait(
    wf: RunbookWorkflow, scale: ScaleRequest, poll_seconds: float, timeout_seconds: float
) -> None:
    """Scale a service (idempotent, capped by `max_count`), then wait until that many tasks run."""
    wf.set_phase("act")
    await wf.step(
        f"scale {scale.service}",
        workflow.execute_activity_method(
            EcsActivities.scale_service,
            scale,
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=MUTATION_HEARTBEAT,
            retry_policy=MUTATE_RETRY,
        ),
        lambda r: r.reason,
    )
    wf.set_phase("verify")
    target = scale.desired_count
    await wf.step(
        f"wait until {target} {scale.service} tasks run",
        workflow.execute_activity_method(
            EcsActivities.wait_running,
            WaitRunningRequest(
                cluster=scale.cluster,
                service=scale.service,
                at_least=target,
                poll_seconds=poll_seconds,
            ),
            start_to_close_timeout=timedelta(seconds=timeout_seconds),
            heartbeat_timeout=timedelta(seconds=max(30, poll_seconds * 4)),
        ),
        lambda r: f"{r.running_count}/{r.desired_count} running after {r.waited_seconds:.0f}s",
    )


async def scale_stale(
    wf: RunbookWorkflow, cluster: str, service: str, planned_from: int, timeout_seconds: float
) -> str | None:
    """Once the lock is held: is the service still at the desired count the plan scales from?"""
    found: ServicesResult = await wf.step(
        f"re-read {service}",
        read(
            EcsActivities.describe_services,
            ServicesRequest(cluster=cluster, services=[service]),
            timeout_seconds,
        ),
        lambda r: f"desired {r.services[0].desired_count}" if r.services else "not found",
    )
    svc = first_service(found)
    if svc is None:
        return f"{service} is no longer found in {cluster}"
    if svc.desired_count == planned_from:
        return None
    return (
        f"{service} desired count is now {svc.desired_count}, not {planned_from} that the "
        "approved plan scales from: another change came first"
    )


def judge_service(svc: EcsService) -> Finding:
    counts = f"{svc.running_count}/{svc.desired_count} running"
    if svc.pending_count:
        counts += f", {svc.pending_count} pending"
    if svc.desired_count and svc.running_count == 0:
        verdict = "failing"
    elif svc.running_count < svc.desired_count:
        verdict = "degraded"
    else:
        verdict = "ok"
    return Finding(
        check=f"ecs {svc.name}", verdict=verdict, summary=counts, data=svc.model_dump(mode="json")
    )


def first_service(result: ServicesResult | None) -> EcsService | None:
    return result.services[0] if result and result.services else None


def judge_one_service(result: ServicesResult) -> Finding:
    svc = first_service(result)
    if svc is None:
        missing = ", ".join(result.missing) or "the service"
        return Finding(
            check="ecs service",
            verdict="unavailable",
            summary=f"{missing}: not found in {result.cluster}",
        )
    return judge_service(svc)


def judge_services(result: ServicesResult) -> Finding:
    """Every service of the cluster at once (triage)."""
    findings = [judge_service(s) for s in result.services]
    worst = worst_verdict([f.verdict for f in findings])
    summary = "; ".join(
        f"{s.name} {f.summary}" for s, f in zip(result.services, findings, strict=True)
    )
    return Finding(
        check="ecs services",
        verdict=worst,
        summary=summary or "no services",
        data={
            s.name: {"running": s.running_count, "desired": s.desired_count}
            for s in result.services
        },
    )


def judge_tasks(tasks: TasksResult) -> Finding:
    running = [t for t in tasks.tasks if t.last_status == "RUNNING"]
    unhealthy = [t for t in running if t.health_status == "UNHEALTHY"]
    stopped = [t for t in tasks.tasks if t.last_status == "STOPPED"]
    crashed = [
        t for t in stopped if t.stop_code == "EssentialContainerExited" or _oom(t.stopped_reason)
    ]
    reasons: dict[str, int] = {}
    for task in crashed:
        key = (task.stopped_reason or "unknown")[:120]
        reasons[key] = reasons.get(key, 0) + 1
    summary = f"{len(running)} running ({len(unhealthy)} unhealthy), {len(stopped)} stopped"
    if reasons:
        summary += "; " + ", ".join(f"{n}x {r}" for r, n in reasons.items())
    if running and len(unhealthy) == len(running):
        verdict = "failing"
    elif unhealthy or crashed:
        verdict = "degraded"
    else:
        verdict = "ok"
    return Finding(
        check=f"ecs {tasks.service} tasks",
        verdict=verdict,
        summary=summary,
        data={
            "running": len(running),
            "unhealthy": len(unhealthy),
            "stopped": len(stopped),
            "crash_reasons": reasons,
        },
    )


def _oom(reason: str | None) -> bool:
    return bool(reason) and "OutOfMemory" in (reason or "")


def judge_logs(errors: LogErrorsResult) -> Finding:
    terms = ", ".join(f"{n} {t}" for t, n in errors.by_term.items())
    critical = errors.by_term.get("CRITICAL", 0)
    if errors.total > ERRORS_FAILING or critical:
        verdict = "failing"
    elif errors.total:
        verdict = "degraded"
    else:
        verdict = "ok"
    top = next(iter(errors.top_messages), "")
    summary = f"{terms} in {errors.minutes} min" + (f"; most frequent: {top[:100]}" if top else "")
    return Finding(
        check=f"logs {errors.log_group}",
        verdict=verdict,
        summary=summary,
        data={"total": errors.total, "by_term": errors.by_term, "top": errors.top_messages},
    )


def judge_health(health: HealthResult) -> Finding:
    if health.ok:
        return Finding(check=health.path, verdict="ok", summary="200", data=_health_data(health))
    detail = health.error or f"HTTP {health.status_code}"
    checks = (health.body or {}).get("checks") or {}
    down = [
        name
        for name, check in checks.items()
        if isinstance(check, dict) and check.get("status") not in ("up", "ok", "healthy")
    ]
    if down:
        detail += f"; failing: {', '.join(down)}"
    elif (health.body or {}).get("status"):
        detail += f"; {health.body.get('status') if health.body else ''}"
    return Finding(check=health.path, verdict="failing", summary=detail, data=_health_data(health))


def _health_data(health: HealthResult) -> dict[str, Any]:
    return {"status_code": health.status_code, "body": health.body, "error": health.error}


def judge_lag(threshold: int):  # type: ignore[no-untyped-def]
    def judge(lag: LagResult) -> Finding:
        summary = f"{lag.total_lag} behind in {lag.group}"
        if lag.lag_rate is not None:
            trend = "growing" if lag.lag_rate > 0 else "falling" if lag.lag_rate < 0 else "flat"
            summary += (
                f", {trend} {abs(lag.lag_rate):.0f}/s (in {lag.produce_rate:.0f}/s, "
                f"consumed {lag.consume_rate:.0f}/s)"
            )
        verdict = "failing" if lag.total_lag > threshold else "ok"
        if verdict == "ok" and (lag.lag_rate or 0) > 0 and lag.total_lag > 0:
            verdict = "degraded"
        return Finding(
            check="consumer lag", verdict=verdict, summary=summary, data=lag.model_dump(mode="json")
        )

    return judge


def judge_dlq(dlq: DlqPeekResult) -> Finding:
    if not dlq.exists:
        return Finding(check="dlq", verdict="ok", summary=f"{dlq.topic} does not exist")
    reasons = ", ".join(f"{n}x {r}" for r, n in list(dlq.reasons.items())[:3])
    summary = f"{dlq.total_messages} messages in {dlq.topic}"
    if dlq.messages:
        summary += f"; first {len(dlq.messages)}: {reasons}"
    return Finding(
        check="dlq",
        verdict="degraded" if dlq.total_messages else "ok",
        summary=summary,
        data={
            "total": dlq.total_messages,
            "reasons": dlq.reasons,
            "first": [m.model_dump(mode="json") for m in dlq.messages],
        },
    )


def judge_connections(conns: ConnectionSummary) -> Finding:
    states = ", ".join(f"{n} {s}" for s, n in sorted(conns.by_state.items()))
    longest = conns.long_running[0] if conns.long_running else None
    summary = f"{conns.total} connections ({states})"
    if longest:
        summary += (
            f"; {len(conns.long_running)} long-running, longest {longest.duration_seconds:.0f}s: "
            f"{longest.query[:80]}"
        )
    return Finding(
        check="database connections",
        verdict="degraded" if conns.long_running else "ok",
        summary=summary,
        data=conns.model_dump(mode="json"),
    )


def describe_slow(slow: SlowQueriesResult) -> str:
    if not slow.available:
        return slow.note
    return "; ".join(
        f"{q.mean_exec_time_ms:.0f} ms x{q.calls}: {q.query[:80]}" for q in slow.queries[:3]
    )


def worst_verdict(verdicts: list[str]) -> Any:
    for verdict in ("failing", "degraded", "unavailable"):
        if verdict in verdicts:
            return verdict
    return "ok"


def recent_deploy(svc: EcsService | None, now: datetime, within: timedelta) -> str | None:
    """The service's newest deployment when it began `within` and is not the service's first
    (a new version, or a forced redeploy), described; else None (runbook.md 5, When to
    Rollback: a deploy that causes an error spike or fails its smoke tests)."""
    if svc is None:
        return None
    started = [d for d in svc.deployments if d.created_at is not None]
    if not started:
        return None
    newest = max(started, key=lambda d: d.created_at or now)
    assert newest.created_at is not None
    first = svc.created_at is not None and newest.created_at - svc.created_at < timedelta(minutes=5)
    if first or now - newest.created_at > within:
        return None
    minutes = max(0, int((now - newest.created_at).total_seconds() // 60))
    revision = (newest.task_definition or "?").rsplit("/", 1)[-1]
    return f"{revision} deployed {minutes} min ago"
