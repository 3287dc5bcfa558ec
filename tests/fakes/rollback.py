"""Fake activities for the Rollback workflow-logic tests: ECS with task-definition families
and a `/health` that reports the image `api` runs. The real activities have their tests
against the sandbox's moto (tests/activities/test_ecs_rollback.py) and end to end
(tests/e2e/test_rollback.py)."""

from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.ecs import ServicesRequest, ServicesResult
from activities.ecs_rollout import (
    RevisionsRequest,
    RevisionsResult,
    RolloutResult,
    TaskDefinitionInfo,
    TaskDefinitionRequest,
    UseTaskDefinitionRequest,
    UseTaskDefinitionResult,
    WaitRolloutRequest,
    revision_number,
)
from activities.health import HealthRequest, HealthResult
from tests.fakes.ecs import rollout_completed, service
from tests.fakes.systems import FakeSystems

SERVICES = ("api", "context-engine", "orchestration-engine")
# Revision n of every family runs TAGS[n - 1]; the last one is the bad deploy.
TAGS = ("v1.4.0", "v1.4.1", "v1.4.2", "v1.5.0")
BAD = "v1.5.0"
ARN = "arn:aws:ecs:us-east-1:123456789012:task-definition/"


def td(service: str, revision: int) -> TaskDefinitionInfo:
    return TaskDefinitionInfo(
        arn=f"{ARN}prod-{service}:{revision}",
        family=f"prod-{service}",
        revision=revision,
        status="ACTIVE",
        cpu=1024,
        memory=2048,
        images={service: f"revenue-context/{service}:{TAGS[revision - 1]}"},
        requires_compatibilities=["FARGATE"],
    )


@dataclass
class FakeRollback:
    gate: FakeSystems
    # service -> the revision it runs now
    current: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, 4))
    fail_rollout: set[str] = field(default_factory=set)
    # /health keeps answering 503 whatever runs (a rollback that does not help)
    health_stuck: bool = False
    calls: list[str] = field(default_factory=list)
    updates: list[UseTaskDefinitionRequest] = field(default_factory=list)

    def activities(self) -> list[Any]:
        @activity.defn(name="ecs.describe_services")
        async def describe_services(req: ServicesRequest) -> ServicesResult:
            self.calls.append(f"describe {req.services[0]}")
            services = [service(n, task_def=td(n, self.current[n]).arn) for n in req.services]
            return ServicesResult(cluster=req.cluster, services=services)

        @activity.defn(name="ecs.describe_task_definition")
        async def describe_td(req: TaskDefinitionRequest) -> TaskDefinitionInfo:
            family, revision = req.task_definition.rsplit("/", 1)[-1].rsplit(":", 1)
            return td(family.removeprefix("prod-"), int(revision))

        @activity.defn(name="ecs.list_revisions")
        async def list_revisions(req: RevisionsRequest) -> RevisionsResult:
            name = req.family.removeprefix("prod-")
            newest = [td(name, n) for n in range(len(TAGS), 0, -1)]
            return RevisionsResult(family=req.family, revisions=newest[: req.max_items])

        @activity.defn(name="ecs.use_task_definition")
        async def use(req: UseTaskDefinitionRequest) -> UseTaskDefinitionResult:
            self.calls.append(f"use {req.service}")
            before = td(req.service, self.current[req.service]).arn
            revision = revision_number(req.task_definition)
            assert revision is not None
            changed = revision != self.current[req.service]
            if changed:
                self.updates.append(req)
                self.current[req.service] = revision
            return UseTaskDefinitionResult(
                service=req.service,
                previous_task_definition=before,
                task_definition=req.task_definition,
                changed=changed,
                reason=f"-> prod-{req.service}:{revision}" if changed else "already on it",
            )

        @activity.defn(name="ecs.wait_rollout")
        async def wait_rollout(req: WaitRolloutRequest) -> RolloutResult:
            self.calls.append(f"rollout {req.service}")
            if req.service in self.fail_rollout:
                raise ApplicationError(
                    f"{req.service}: rollout of {req.task_definition} FAILED: tasks failed to "
                    "start (CannotPullContainerError)",
                    type="RolloutFailed",
                    non_retryable=True,
                )
            return rollout_completed(req, "ecs-svc/2")

        @activity.defn(name="health.check")
        async def health(req: HealthRequest) -> HealthResult:
            self.calls.append(f"health {req.path}")
            version = TAGS[self.current["api"] - 1]
            good = version != BAD and not self.health_stuck
            if req.path == "/health/detailed":
                return HealthResult(path=req.path, ok=True, status_code=200, latency_ms=3)
            return HealthResult(
                path=req.path,
                ok=good,
                status_code=200 if good else 503,
                body={"status": "ok" if good else "degraded", "version": version},
                latency_ms=2,
            )

        return [
            describe_services,
            describe_td,
            list_revisions,
            use,
            wait_rollout,
            health,
            *self.gate.gate_activities(),
        ]
