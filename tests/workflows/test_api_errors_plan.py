"""api-errors' plan from its findings (pure): tasks stopped out of memory point to
high-memory, not to scaling; other crashes still scale."""

from activities.ecs import EcsService
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
