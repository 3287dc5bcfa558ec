"""api-errors' plan from its findings (pure): tasks stopped out of memory point to
high-memory, not to scaling; other crashes still scale."""

from datetime import UTC, datetime, timedelta

from activities.ecs import Deployment, EcsService
from workflows.api_errors import ApiErrorsInput, make_plan
from workflows.models import Finding

INP = ApiErrorsInput()
SVC = EcsService(name="api", status="ACTIVE", desired_count=2, running_count=2, pending_count=0)


def findings(crash_reason: str) -> dict[str, Finding]:
    return {
        "5xx rate": Finding(check="5xx rate", verdict="failing", summary="12% 5xx"),
        "ecs api tasks": Finding(
            check="ecs api tasks",
            verdict="degraded",
            summary="2 running, 2 stopped",
            data={"crash_reasons": {crash_reason: 2}},
        ),
    }


def test_oom_killed_tasks_recommend_high_memory_not_scaling() -> None:
    oom = "OutOfMemoryError: Container killed due to memory usage"
    plan = make_plan(INP, findings(oom), SVC)
    assert (plan.action, plan.recommendation) == ("none", "high-memory")
    assert "2 api task(s) stopped out of memory" in plan.summary
    assert plan.steps == [f"runbook start high-memory --severity {INP.severity}"]


def test_other_crashes_still_scale_and_old_runs_keep_scaling_on_oom() -> None:
    crash = make_plan(INP, findings("Essential container in task exited"), SVC)
    assert (crash.action, crash.recommendation, crash.target) == (
        "scale",
        "scale",
        INP.target_count,
    )
    oom = "OutOfMemoryError: Container killed due to memory usage"
    recorded = make_plan(INP, findings(oom), SVC, oom_to_high_memory=False)
    assert recorded.recommendation == "scale"


# ---- hand-offs: the plan of runs that may start what it points at (`now` given) -------------

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def deployed(minutes_ago: float, service_age: timedelta = timedelta(days=30)) -> EcsService:
    """api whose newest deployment began `minutes_ago`."""
    when = NOW - timedelta(minutes=minutes_ago)
    return SVC.model_copy(
        update={
            "created_at": NOW - service_age,
            "deployments": [
                Deployment(
                    id="ecs-svc/2",
                    status="PRIMARY",
                    task_definition="td/prod-api:4",
                    created_at=when,
                )
            ],
        }
    )


def test_errors_after_a_deploy_in_the_last_hour_offer_rollback_before_scaling() -> None:
    crash = findings("Essential container in task exited")
    plan = make_plan(INP, crash, deployed(20), now=NOW)
    assert (plan.action, plan.recommendation, plan.offers) == ("handoff", "rollback", ["rollback"])
    assert "prod-api:4 deployed 20 min ago" in plan.summary
    assert (
        plan.steps[-1]
        == f"Or reject, and run it by hand: runbook start rollback --severity {INP.severity}"
    )
    # An older deploy, the service's own first deployment, or a run recorded before hand-offs
    # (no `now`): scaling, as before.
    assert make_plan(INP, crash, deployed(90), now=NOW).recommendation == "scale"
    first = deployed(20, service_age=timedelta(minutes=21))
    assert make_plan(INP, crash, first, now=NOW).recommendation == "scale"
    assert make_plan(INP, crash, deployed(20)).action == "scale"


def test_every_cause_found_is_offered_the_runbook_s_first_by_default() -> None:
    oom = findings("OutOfMemoryError: Container killed due to memory usage")
    oom["rds CPUUtilization"] = Finding(
        check="rds CPUUtilization", verdict="failing", summary="96%"
    )
    plan = make_plan(INP, oom, deployed(5), now=NOW)
    assert plan.recommendation == "db-failover"
    assert plan.offers == ["db-failover", "high-memory", "rollback"]
    # Before hand-offs the same findings only recommended, with nothing to choose.
    old = make_plan(INP, oom, deployed(5))
    assert (old.action, old.offers) == ("none", [])


def test_a_service_rollback_does_not_know_is_not_offered_rollback() -> None:
    crash = findings("Essential container in task exited")
    other = ApiErrorsInput(service="checkout")
    assert make_plan(other, crash, deployed(20), now=NOW).recommendation == "scale"
