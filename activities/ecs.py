"""ECS: services and their counts, tasks and their health, scaling a service idempotently.

Other procedures add their own methods to `EcsActivities` (task-definition revisions,
deployments); the models they share live here too.
"""

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from activities.approvals import Authority
from activities.aws_access import AwsAccess

# ---- llm-budget / rollback / high-memory: models for the block at the end ----
from activities.ecs_rollout import (
    DeploymentStarted,
    ForceDeploymentRequest,
    RegisterMemoryRequest,
    RegisterResult,
    RevisionsRequest,
    RevisionsResult,
    RolloutResult,
    TaskDefinitionInfo,
    TaskDefinitionRequest,
    UseTaskDefinitionRequest,
    UseTaskDefinitionResult,
    WaitRolloutRequest,
    container_changes,
    containers_scaled,
    registrable,
    task_definition_info,
)
from activities.fargate import memory_refusal
from activities.keepalive import heartbeating

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

DEFAULT_CLUSTER = "prod-revenue-context"
RUNBOOK_SERVICES = ("api", "context-engine", "orchestration-engine")
DESCRIBE_TASKS_BATCH = 100  # describe_tasks takes at most 100 task ARNs a call


class ServicesRequest(BaseModel):
    cluster: str = DEFAULT_CLUSTER
    # Empty: every service of the cluster.
    services: list[str] = []


class Deployment(BaseModel):
    id: str
    status: str
    task_definition: str | None = None
    desired_count: int = 0
    running_count: int = 0
    pending_count: int = 0
    rollout_state: str | None = None
    rollout_state_reason: str | None = None
    # When ECS began it (a new task definition or a forced deployment): "a deploy in the
    # last hour" (runbook.md 5, When to Rollback).
    created_at: datetime | None = None


class EcsService(BaseModel):
    name: str
    status: str
    desired_count: int
    running_count: int
    pending_count: int
    task_definition: str | None = None
    launch_type: str | None = None
    deployments: list[Deployment] = []
    # The newest service events (ECS keeps 100), newest first.
    events: list[str] = []
    # The service's own creation: its first deployment is no deploy of a new version.
    created_at: datetime | None = None


class ServicesResult(BaseModel):
    cluster: str
    services: list[EcsService]
    # Asked for but not found.
    missing: list[str] = []


class TasksRequest(BaseModel):
    cluster: str = DEFAULT_CLUSTER
    service: str
    # Stopped tasks stay visible for about an hour: their reasons say why tasks died.
    include_stopped: bool = True


class ContainerState(BaseModel):
    name: str
    last_status: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    health_status: str | None = None


class EcsTask(BaseModel):
    task_arn: str
    task_id: str
    last_status: str
    desired_status: str
    health_status: str = "UNKNOWN"
    task_definition: str | None = None
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    stopped_reason: str | None = None
    stop_code: str | None = None
    containers: list[ContainerState] = []


class TasksResult(BaseModel):
    cluster: str
    service: str
    tasks: list[EcsTask]

    def count(self, last_status: str) -> int:
        return sum(1 for t in self.tasks if t.last_status == last_status)


class ScaleRequest(BaseModel):
    cluster: str = DEFAULT_CLUSTER
    service: str
    desired_count: int = Field(ge=0)
    # The most tasks this runbook may ask for; more is refused (non-retryable).
    max_count: int = Field(10, ge=1)
    # A runbook scales up; it scales down only when asked explicitly.
    allow_scale_down: bool = False
    # The approvals this change acts on; the worker checks them against the run that
    # scheduled it (activities/decision_guard.py) before the activity runs.
    authority: Authority | None = None


class ScaleResult(BaseModel):
    service: str
    previous_desired: int
    desired_count: int
    changed: bool
    reason: str


class WaitRunningRequest(BaseModel):
    cluster: str = DEFAULT_CLUSTER
    service: str
    # Wait until at least this many tasks run (default: the service's desired count).
    at_least: int | None = Field(None, ge=0)
    poll_seconds: float = Field(2.0, gt=0, le=60)


class WaitRunningResult(BaseModel):
    service: str
    running_count: int
    desired_count: int
    waited_seconds: float
    polls: int


def _deployment(raw: dict[str, Any]) -> Deployment:
    return Deployment(
        id=raw.get("id", ""),
        status=raw.get("status", ""),
        task_definition=raw.get("taskDefinition"),
        desired_count=raw.get("desiredCount", 0),
        running_count=raw.get("runningCount", 0),
        pending_count=raw.get("pendingCount", 0),
        rollout_state=raw.get("rolloutState"),
        rollout_state_reason=raw.get("rolloutStateReason"),
        created_at=raw.get("createdAt"),
    )


def service_model(raw: dict[str, Any]) -> EcsService:
    return EcsService(
        name=raw["serviceName"],
        status=raw.get("status", ""),
        desired_count=raw.get("desiredCount", 0),
        running_count=raw.get("runningCount", 0),
        pending_count=raw.get("pendingCount", 0),
        task_definition=raw.get("taskDefinition"),
        launch_type=raw.get("launchType"),
        deployments=[_deployment(d) for d in raw.get("deployments", [])],
        events=[e.get("message", "") for e in raw.get("events", [])[:5]],
        created_at=raw.get("createdAt"),
    )


def task_model(raw: dict[str, Any]) -> EcsTask:
    arn = raw["taskArn"]
    return EcsTask(
        task_arn=arn,
        task_id=arn.rsplit("/", 1)[-1],
        last_status=raw.get("lastStatus", ""),
        desired_status=raw.get("desiredStatus", ""),
        health_status=raw.get("healthStatus") or "UNKNOWN",
        task_definition=raw.get("taskDefinitionArn"),
        started_at=raw.get("startedAt"),
        stopped_at=raw.get("stoppedAt"),
        stopped_reason=raw.get("stoppedReason") or None,
        stop_code=raw.get("stopCode"),
        containers=[
            ContainerState(
                name=c.get("name", ""),
                last_status=c.get("lastStatus"),
                exit_code=c.get("exitCode"),
                reason=c.get("reason"),
                health_status=c.get("healthStatus"),
            )
            for c in raw.get("containers", [])
        ],
    )


class EcsActivities:
    def __init__(self, aws: AwsAccess) -> None:
        self._aws = aws
        self._ecs = aws.client("ecs")

    # ---- reading ------------------------------------------------------------------------

    def _cluster_error(self, err: "ClientError", cluster: str) -> None:
        if err.response["Error"]["Code"] == "ClusterNotFoundException":
            raise ApplicationError(
                f"cluster: no ECS cluster named {cluster!r}",
                type="ClusterNotFound",
                non_retryable=True,
            ) from err

    def _service_names(self, cluster: str) -> list[str]:
        names: list[str] = []
        for page in self._ecs.get_paginator("list_services").paginate(cluster=cluster):
            names += [arn.rsplit("/", 1)[-1] for arn in page.get("serviceArns", [])]
        return sorted(names)

    def _describe(self, cluster: str, names: list[str]) -> ServicesResult:
        try:
            names = names or self._service_names(cluster)
            found: list[EcsService] = []
            missing: list[str] = []
            for start in range(0, len(names), 10):  # describe_services takes 10 at a time
                out = self._ecs.describe_services(
                    cluster=cluster, services=names[start : start + 10]
                )
                found += [service_model(s) for s in out.get("services", [])]
                missing += [f["arn"].rsplit("/", 1)[-1] for f in out.get("failures", [])]
        except self._ecs.exceptions.ClientError as err:
            self._cluster_error(err, cluster)
            raise
        return ServicesResult(cluster=cluster, services=found, missing=missing)

    def _one(self, cluster: str, service: str) -> EcsService:
        result = self._describe(cluster, [service])
        active = [s for s in result.services if s.status == "ACTIVE"]
        if not active:
            known = ", ".join(self._service_names(cluster)) or "none"
            raise ApplicationError(
                f"service: no active ECS service {service!r} in {cluster}; services: {known}",
                type="ServiceNotFound",
                non_retryable=True,
            )
        return active[0]

    @activity.defn(name="ecs.describe_services")
    def describe_services(self, req: ServicesRequest) -> ServicesResult:
        return self._describe(req.cluster, req.services)

    @activity.defn(name="ecs.list_tasks")
    def list_tasks(self, req: TasksRequest) -> TasksResult:
        """The service's tasks (running and, by default, recently stopped) with their
        health, stop reasons and container exit codes."""
        statuses = ["RUNNING", "STOPPED"] if req.include_stopped else ["RUNNING"]
        arns: list[str] = []
        try:
            for status in statuses:
                pages = self._ecs.get_paginator("list_tasks").paginate(
                    cluster=req.cluster, serviceName=req.service, desiredStatus=status
                )
                arns += [arn for page in pages for arn in page.get("taskArns", [])]
            tasks: list[EcsTask] = []
            for start in range(0, len(arns), DESCRIBE_TASKS_BATCH):
                batch = arns[start : start + DESCRIBE_TASKS_BATCH]
                out = self._ecs.describe_tasks(cluster=req.cluster, tasks=batch)
                tasks += [task_model(t) for t in out.get("tasks", [])]
        except self._ecs.exceptions.ClientError as err:
            self._cluster_error(err, req.cluster)
            raise
        return TasksResult(cluster=req.cluster, service=req.service, tasks=tasks)

    # ---- scaling ------------------------------------------------------------------------

    @activity.defn(name="ecs.scale_service", no_thread_cancel_exception=True)
    @heartbeating
    def scale_service(self, req: ScaleRequest) -> ScaleResult:
        """Set the desired count, once: reads the current count first, never scales down
        unless asked, and refuses more than `max_count` tasks."""
        if req.desired_count > req.max_count:
            raise ApplicationError(
                f"desired_count: {req.desired_count} is above the cap; allowed: 0 to "
                f"{req.max_count}",
                type="ValueError",
                non_retryable=True,
            )
        current = self._one(req.cluster, req.service)
        before = current.desired_count
        if before == req.desired_count:
            return ScaleResult(
                service=req.service,
                previous_desired=before,
                desired_count=before,
                changed=False,
                reason=f"already at desired {before}: nothing to change",
            )
        if req.desired_count < before and not req.allow_scale_down:
            return ScaleResult(
                service=req.service,
                previous_desired=before,
                desired_count=before,
                changed=False,
                reason=f"desired is {before}, above {req.desired_count}: not scaling down",
            )
        self._aws.mutating("ecs").update_service(
            cluster=req.cluster, service=req.service, desiredCount=req.desired_count
        )
        return ScaleResult(
            service=req.service,
            previous_desired=before,
            desired_count=req.desired_count,
            changed=True,
            reason=f"desired count {before} -> {req.desired_count}",
        )

    @activity.defn(name="ecs.wait_running")
    def wait_running(self, req: WaitRunningRequest) -> WaitRunningResult:
        """Poll until enough tasks run; the activity's start-to-close timeout bounds the wait,
        heartbeats show the counts."""
        started = time.monotonic()
        polls = 0
        while True:
            svc = self._one(req.cluster, req.service)
            polls += 1
            activity.heartbeat({"running": svc.running_count, "desired": svc.desired_count})
            target = svc.desired_count if req.at_least is None else req.at_least
            if svc.running_count >= target and svc.pending_count == 0:
                return WaitRunningResult(
                    service=req.service,
                    running_count=svc.running_count,
                    desired_count=svc.desired_count,
                    waited_seconds=round(time.monotonic() - started, 1),
                    polls=polls,
                )
            activity.wait_for_cancelled_sync(req.poll_seconds)
            if activity.is_cancelled():
                raise CancelledError(f"wait cancelled at {svc.running_count} running")

    # ---- deployments and revisions (llm-budget, rollback, high-memory) ---------

    def _task_definition(self, ref: str) -> dict[str, Any]:
        try:
            return self._ecs.describe_task_definition(taskDefinition=ref)["taskDefinition"]
        except self._ecs.exceptions.ClientError as err:
            if err.response["Error"]["Code"] in ("ClientException", "InvalidParameterException"):
                raise ApplicationError(
                    f"task_definition: no task definition {ref!r}",
                    type="TaskDefinitionNotFound",
                    non_retryable=True,
                ) from err
            raise

    @activity.defn(name="ecs.describe_task_definition")
    def describe_task_definition(self, req: TaskDefinitionRequest) -> TaskDefinitionInfo:
        return task_definition_info(self._task_definition(req.task_definition))

    @activity.defn(name="ecs.list_revisions")
    def list_revisions(self, req: RevisionsRequest) -> RevisionsResult:
        """The family's newest ACTIVE revisions, newest first, with their images."""
        arns: list[str] = []
        pages = self._ecs.get_paginator("list_task_definitions").paginate(
            familyPrefix=req.family, status="ACTIVE", sort="DESC"
        )
        for page in pages:
            arns += page.get("taskDefinitionArns", [])
        # Sorted here too: not every implementation honours `sort`.
        arns = sorted(set(arns), key=lambda a: int(a.rsplit(":", 1)[-1]), reverse=True)
        infos = [task_definition_info(self._task_definition(arn)) for arn in arns[: req.max_items]]
        return RevisionsResult(family=req.family, revisions=infos)

    @activity.defn(name="ecs.force_new_deployment", no_thread_cancel_exception=True)
    @heartbeating
    def force_new_deployment(self, req: ForceDeploymentRequest) -> DeploymentStarted:
        """Restart the service's tasks (to pick up new configuration), once: if the PRIMARY
        deployment is no longer the one seen before, a newer one already does it."""
        svc = self._one(req.cluster, req.service)
        primary = next((d for d in svc.deployments if d.status == "PRIMARY"), None)
        if primary and primary.id != req.seen_deployment_id:
            return DeploymentStarted(
                service=req.service,
                deployment_id=primary.id,
                task_definition=primary.task_definition,
                started=False,
                reason=f"deployment {primary.id} already replaced {req.seen_deployment_id}",
            )
        out = self._aws.mutating("ecs").update_service(
            cluster=req.cluster, service=req.service, forceNewDeployment=True
        )["service"]
        new = next(d for d in out["deployments"] if d.get("status") == "PRIMARY")
        return DeploymentStarted(
            service=req.service,
            deployment_id=new["id"],
            task_definition=new.get("taskDefinition"),
            started=True,
            reason=f"new deployment {new['id']} forced",
        )

    @activity.defn(name="ecs.wait_rollout")
    def wait_rollout(self, req: WaitRolloutRequest) -> RolloutResult:
        """Poll until the PRIMARY deployment (the one asked for) is COMPLETED with running ==
        desired; a FAILED rollout is a non-retryable error naming ECS's reason."""
        started = time.monotonic()
        polls = 0
        while True:
            svc = self._one(req.cluster, req.service)
            polls += 1
            primary = next((d for d in svc.deployments if d.status == "PRIMARY"), None)
            state = primary.rollout_state if primary else None
            activity.heartbeat({"state": state, "running": svc.running_count})
            if primary and self._is_target(req, primary.id, primary.task_definition):
                if state == "FAILED":
                    raise ApplicationError(
                        f"{req.service}: rollout of {primary.task_definition} FAILED: "
                        f"{primary.rollout_state_reason or 'no reason given'}",
                        type="RolloutFailed",
                        non_retryable=True,
                    )
                if state == "COMPLETED" and svc.running_count == svc.desired_count:
                    return RolloutResult(
                        service=req.service,
                        deployment_id=primary.id,
                        task_definition=primary.task_definition,
                        rollout_state=state,
                        running_count=svc.running_count,
                        desired_count=svc.desired_count,
                        waited_seconds=round(time.monotonic() - started, 1),
                        polls=polls,
                    )
            activity.wait_for_cancelled_sync(req.poll_seconds)
            if activity.is_cancelled():
                raise CancelledError(f"wait cancelled while {req.service} rollout is {state}")

    @staticmethod
    def _is_target(req: WaitRolloutRequest, deployment_id: str, task_def: str | None) -> bool:
        if req.deployment_id and deployment_id != req.deployment_id:
            return False
        return not req.task_definition or task_def == req.task_definition

    @activity.defn(name="ecs.register_memory_revision", no_thread_cancel_exception=True)
    @heartbeating
    def register_memory_revision(self, req: RegisterMemoryRequest) -> RegisterResult:
        """A revision copied from `task_definition` with only the task memory changed; an
        identical ACTIVE revision is reused, so a retry registers nothing new."""
        current = self._task_definition(req.task_definition)
        fargate = "FARGATE" in (current.get("requiresCompatibilities") or [])
        refusal = memory_refusal(int(current.get("cpu") or 0), req.memory) if fargate else None
        if refusal:
            raise ApplicationError(refusal, type="InvalidFargateMemory", non_retryable=True)
        wanted = {**registrable(current), "memory": str(req.memory)}
        containers = ""
        if req.containers and current.get("memory"):
            defined = current.get("containerDefinitions") or []
            scaled = containers_scaled(defined, int(current["memory"]), req.memory)
            wanted["containerDefinitions"] = scaled
            containers = container_changes(defined, scaled)
        existing = self.list_revisions(RevisionsRequest(family=current["family"], max_items=20))
        for info in existing.revisions:
            if registrable(self._task_definition(info.arn)) == wanted:
                return RegisterResult(
                    task_definition=info,
                    registered=False,
                    reason=f"{info.ref} already has memory {req.memory}: reused",
                )
        raw = self._aws.mutating("ecs").register_task_definition(**wanted)["taskDefinition"]
        info = task_definition_info(raw)
        return RegisterResult(
            task_definition=info,
            registered=True,
            reason=f"registered {info.ref}: memory {current.get('memory')} -> {req.memory}"
            + (f"; containers: {containers}" if containers else ""),
        )

    @activity.defn(name="ecs.use_task_definition", no_thread_cancel_exception=True)
    @heartbeating
    def use_task_definition(self, req: UseTaskDefinitionRequest) -> UseTaskDefinitionResult:
        """Point the service at a task definition, once: already on it, nothing is done."""
        target = task_definition_info(self._task_definition(req.task_definition)).arn
        svc = self._one(req.cluster, req.service)
        if svc.task_definition == target:
            return UseTaskDefinitionResult(
                service=req.service,
                previous_task_definition=svc.task_definition,
                task_definition=target,
                changed=False,
                reason=f"already on {target.rsplit('/', 1)[-1]}",
            )
        self._aws.mutating("ecs").update_service(
            cluster=req.cluster, service=req.service, taskDefinition=target
        )
        return UseTaskDefinitionResult(
            service=req.service,
            previous_task_definition=svc.task_definition,
            task_definition=target,
            changed=True,
            reason=f"{(svc.task_definition or '?').rsplit('/', 1)[-1]} -> "
            f"{target.rsplit('/', 1)[-1]}",
        )
