"""Models and pure helpers for the ECS methods that change what a service runs: forced
deployments, task-definition revisions, rollouts (llm-budget, rollback, high-memory).

The methods themselves are in the marked block at the end of `EcsActivities`
(activities/ecs.py); this module keeps that file's additions small.
"""

from typing import Any

from pydantic import BaseModel, Field

from activities.approvals import Authority

DEFAULT_CLUSTER = "prod-revenue-context"

# What register_task_definition takes back from describe_task_definition; the rest
# (ARN, revision, status, registeredAt, compatibilities, ...) is ECS's own bookkeeping.
REGISTRABLE = (
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "containerDefinitions",
    "volumes",
    "placementConstraints",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
    "runtimePlatform",
)


class TaskDefinitionRequest(BaseModel):
    # ARN, or family:revision, or a family (its latest ACTIVE revision).
    task_definition: str = Field(min_length=1)


class TaskDefinitionInfo(BaseModel):
    arn: str
    family: str
    revision: int
    status: str
    cpu: int | None = None
    memory: int | None = None
    # container name -> image
    images: dict[str, str] = {}
    requires_compatibilities: list[str] = []

    @property
    def ref(self) -> str:
        return f"{self.family}:{self.revision}"


class RevisionsRequest(BaseModel):
    family: str = Field(min_length=1)
    max_items: int = Field(5, ge=1, le=50)


class RevisionsResult(BaseModel):
    family: str
    # Newest first, as `list-task-definitions --sort DESC`.
    revisions: list[TaskDefinitionInfo]


class ForceDeploymentRequest(BaseModel):
    cluster: str = DEFAULT_CLUSTER
    service: str
    # The PRIMARY deployment seen before: if it is no longer primary, a newer deployment
    # (ours, after a crash, or anyone's) already restarts the service: not forced again.
    seen_deployment_id: str
    # The approvals this change acts on; the worker checks them against the run that
    # scheduled it (activities/decision_guard.py) before the activity runs.
    authority: Authority | None = None


class DeploymentStarted(BaseModel):
    service: str
    deployment_id: str
    task_definition: str | None
    started: bool
    reason: str


class WaitRolloutRequest(BaseModel):
    cluster: str = DEFAULT_CLUSTER
    service: str
    # Wait for the PRIMARY deployment to be this one / run this task definition (ARN).
    deployment_id: str | None = None
    task_definition: str | None = None
    poll_seconds: float = Field(2.0, gt=0, le=60)


class RolloutResult(BaseModel):
    service: str
    deployment_id: str
    task_definition: str | None
    rollout_state: str
    running_count: int
    desired_count: int
    waited_seconds: float
    polls: int


class RegisterMemoryRequest(BaseModel):
    # The revision to copy (ARN or family:revision); only the task memory changes.
    task_definition: str = Field(min_length=1)
    memory: int = Field(ge=512)
    # Raise each container's own `memory` / `memoryReservation` in proportion too (the
    # workflows recorded before asked for the task memory alone).
    containers: bool = False
    # The approvals this change acts on; the worker checks them against the run that
    # scheduled it (activities/decision_guard.py) before the activity runs.
    authority: Authority | None = None


class RegisterResult(BaseModel):
    task_definition: TaskDefinitionInfo
    registered: bool
    reason: str


class UseTaskDefinitionRequest(BaseModel):
    cluster: str = DEFAULT_CLUSTER
    service: str
    # ARN, or family:revision.
    task_definition: str = Field(min_length=1)
    # The approvals this change acts on; the worker checks them against the run that
    # scheduled it (activities/decision_guard.py) before the activity runs.
    authority: Authority | None = None


class UseTaskDefinitionResult(BaseModel):
    service: str
    previous_task_definition: str | None
    task_definition: str
    changed: bool
    reason: str


def task_definition_info(raw: dict[str, Any]) -> TaskDefinitionInfo:
    return TaskDefinitionInfo(
        arn=raw["taskDefinitionArn"],
        family=raw["family"],
        revision=int(raw["revision"]),
        status=raw.get("status", ""),
        cpu=int(raw["cpu"]) if raw.get("cpu") else None,
        memory=int(raw["memory"]) if raw.get("memory") else None,
        images={c["name"]: c.get("image", "") for c in raw.get("containerDefinitions", [])},
        requires_compatibilities=list(raw.get("requiresCompatibilities") or []),
    )


def registrable(raw: dict[str, Any]) -> dict[str, Any]:
    """The fields that define a revision, as register_task_definition takes them."""
    return {k: raw[k] for k in REGISTRABLE if raw.get(k) not in (None, [], {})}


def containers_scaled(containers: list[dict[str, Any]], old: int, new: int) -> list[dict[str, Any]]:
    """The containers with their own memory limits raised in proportion to the task's.

    ECS stops a container at its own hard limit (`memory`) whatever the task has, so a larger
    task alone leaves the OOM kills going on. Every container is scaled, not only the one
    killed: the revision then follows from the revision alone (a retry finds the same), each
    keeps its share (a sidecar stays small), the hard limits still add up to no more than the
    task's memory and a reservation stays under its hard limit (rounded down, in MiB)."""
    scaled = []
    for container in containers:
        limits = {
            key: int(container[key]) * new // old
            for key in ("memory", "memoryReservation")
            if container.get(key)
        }
        scaled.append({**container, **limits})
    return scaled


def container_changes(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    """`api 1792 -> 3584 MiB (reservation 1024 -> 2048)`, for each container with limits."""
    changes = []
    for old, new in zip(before, after, strict=True):
        parts = [f"{old[k]} -> {new[k]} MiB" for k in ("memory",) if old.get(k)]
        if old.get("memoryReservation"):
            parts.append(f"reservation {old['memoryReservation']} -> {new['memoryReservation']}")
        if parts:
            changes.append(f"{old.get('name', '?')} {', '.join(parts)}")
    return "; ".join(changes)


def revision_number(arn_or_ref: str) -> int | None:
    tail = arn_or_ref.rsplit("/", 1)[-1]
    _, sep, rev = tail.rpartition(":")
    return int(rev) if sep and rev.isdigit() else None


def image_tag(image: str) -> str:
    """`revenue-context/api:v1.4.2` -> `v1.4.2` (a digest or no tag: the whole reference)."""
    name, sep, tag = image.rpartition(":")
    return tag if sep and "/" not in tag and "@" not in name else image
