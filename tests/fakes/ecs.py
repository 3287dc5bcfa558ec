"""ECS as the fakes describe it: a steady service, its one deployment completed, and a
rollout that completes."""

from activities.ecs import Deployment, EcsService
from activities.ecs_rollout import RolloutResult, WaitRolloutRequest


def service(name: str, deployment: str = "ecs-svc/1", task_def: str = "prod-api:3") -> EcsService:
    return EcsService(
        name=name,
        status="ACTIVE",
        desired_count=2,
        running_count=2,
        pending_count=0,
        task_definition=task_def,
        deployments=[
            Deployment(
                id=deployment,
                status="PRIMARY",
                task_definition=task_def,
                desired_count=2,
                running_count=2,
                rollout_state="COMPLETED",
            )
        ],
    )


def rollout_completed(
    req: WaitRolloutRequest, deployment_id: str, task_definition: str | None = None
) -> RolloutResult:
    return RolloutResult(
        service=req.service,
        deployment_id=deployment_id,
        task_definition=task_definition or req.task_definition,
        rollout_state="COMPLETED",
        running_count=2,
        desired_count=2,
        waited_seconds=30,
        polls=10,
    )
