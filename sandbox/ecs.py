"""ECS in moto, made to behave like a cluster that runs tasks.

moto stores services and task definitions but runs nothing: `update_service` sets the
running count to the desired count at once, and `list_tasks` ignores `serviceName`. Here, in
this process only, a reconciler owns the tasks of the seeded services: a new desired count,
task definition or forced deployment starts PENDING tasks that turn RUNNING after
`task_start_seconds`, then stops the surplus and the old deployment's tasks, and keeps the
service's running/pending counts and its PRIMARY deployment's rollout state in step. The
running count of `context-engine` is how many Kafka consumers the sandbox runs.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.core.utils import utcnow
from moto.ec2.models import ec2_backends
from moto.ecs.models import EC2ContainerServiceBackend, Service, Task, ecs_backends
from moto.moto_api import state_manager

CLUSTER = "prod-revenue-context"
IMAGES = ("v1.4.0", "v1.4.1", "v1.4.2")
# service -> desired count at seed (runbook.md: api and context-engine 2, orchestration 1)
SEED_SERVICES: dict[str, int] = {"api": 2, "context-engine": 2, "orchestration-engine": 1}
TICK_SECONDS = 0.1
SCALE_IN_REASON = "Scaling activity initiated by (deployment {deployment})"
REPLACED_REASON = "Task replaced by deployment {deployment}"
OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"
# A container that exits on its own (overloaded, not out of memory).
CRASH_REASON = "Essential container in task exited"

# How long ago the seed's deployments began: before any "last hour".
SEED_DEPLOY_AGE = timedelta(hours=2)


def family(service: str) -> str:
    return f"prod-{service}"


@dataclass
class SimTask:
    service: str
    deployment: str  # the task definition ARN + deployment id it belongs to
    task: Task
    ready_at: float


class EcsSim:
    def __init__(
        self, client: Callable[[str], Any], region: str, task_start_seconds: float
    ) -> None:
        self._client = client
        self._region = region
        self.default_start_seconds = task_start_seconds
        self.task_start_seconds = task_start_seconds
        self._lock = threading.RLock()
        self._tasks: dict[str, SimTask] = {}
        self._originals: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ecs-sim", daemon=True)
        self._network: dict[str, Any] | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    @property
    def backend(self) -> EC2ContainerServiceBackend:
        return ecs_backends[DEFAULT_ACCOUNT_ID][self._region]

    def start(self) -> None:
        # moto advances a task's status each time it is described; ours stay as we set them.
        state_manager.set_transition("ecs::task", {"progression": "manual", "times": sys.maxsize})
        self._install()
        self._seed()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for name, fn in self._originals.items():
            setattr(EC2ContainerServiceBackend, name, fn)
        self._originals.clear()

    def reset(self) -> None:
        """Back to the seed: revision 3, seed desired counts, healthy tasks, no history."""
        with self._lock:
            self.task_start_seconds = self.default_start_seconds
            for task_arn in list(self._tasks):
                self._forget(task_arn)
            for name, desired in SEED_SERVICES.items():
                service = self._service(name)
                service.desired_count = desired
                service.task_definition = self._revision_arn(name, len(IMAGES))
                service.deployments[0]["taskDefinition"] = service.task_definition
                # The seed's deployment is an old one: a redeploy an earlier run forced is
                # no "deploy in the last hour" after a reset (api-errors would offer rollback).
                seeded = utcnow() - SEED_DEPLOY_AGE
                service.deployments[0].update(createdAt=seeded, updatedAt=seeded)
                self._launch(service, desired, ready=True)
                self._sync(service)

    # ---- what the incidents and the Kafka workers use ------------------------------------

    def running(self, service: str) -> int:
        with self._lock:
            return sum(
                1
                for t in self._tasks.values()
                if t.service == service and t.task.last_status == "RUNNING"
            )

    def set_health(self, service: str, unhealthy: int) -> None:
        """Mark `unhealthy` running tasks of a service UNHEALTHY, the others HEALTHY."""
        with self._lock:
            running = self._of(service, "RUNNING")
            for index, sim in enumerate(running):
                status = "UNHEALTHY" if index < unhealthy else "HEALTHY"
                sim.task.health_status = status
                sim.task.containers[0].health_status = status

    def add_stopped(self, service: str, count: int, reason: str, exit_code: int = 137) -> None:
        """Tasks that died recently (ECS shows stopped tasks for about an hour)."""
        with self._lock:
            svc = self._service(service)
            for task in self._new_tasks(svc, count):
                self._stop_task(task, reason, stop_code="EssentialContainerExited")
                task.containers[0].exitCode = exit_code
                task.containers[0].reason = reason
                self._tasks[task.task_arn] = SimTask(service, "", task, 0.0)

    # ---- moto patches ---------------------------------------------------------------------

    def _install(self) -> None:
        original_update = EC2ContainerServiceBackend.update_service
        original_list = EC2ContainerServiceBackend.list_tasks
        self._originals = {"update_service": original_update, "list_tasks": original_list}
        sim = self

        def update_service(backend: Any, props: dict[str, Any]) -> Service:
            with sim._lock:
                service = original_update(backend, props)
                if service.task_definition and ":task-definition/" not in service.task_definition:
                    # moto keeps the string it was given ("prod-api:4"); ECS answers an ARN
                    td = backend.describe_task_definition(service.task_definition)
                    service.task_definition = td.arn
                if service.name in SEED_SERVICES:
                    sim._reconcile(service)  # new tasks are PENDING at once, as in ECS
                sim._sync(service)  # undo moto's "running = desired at once"
                return service

        def list_tasks(backend: Any, *args: Any, **kwargs: Any) -> list[Task]:
            tasks = original_list(backend, *args, **kwargs)
            service_name = kwargs.get("service_name") or (args[4] if len(args) > 4 else None)
            if service_name:
                tasks = [t for t in tasks if t.group == f"service:{service_name}"]
            return tasks

        EC2ContainerServiceBackend.update_service = update_service  # type: ignore[method-assign,assignment]
        EC2ContainerServiceBackend.list_tasks = list_tasks  # type: ignore[method-assign,assignment]

    # ---- seeding --------------------------------------------------------------------------

    def _seed(self) -> None:
        ecs = self._client("ecs")
        for name, desired in SEED_SERVICES.items():
            for image in IMAGES:
                ecs.register_task_definition(**task_definition(name, image))
            ecs.create_service(
                cluster=CLUSTER,
                serviceName=name,
                taskDefinition=f"{family(name)}:{len(IMAGES)}",
                desiredCount=desired,
                launchType="FARGATE",
            )
        with self._lock:
            for name, desired in SEED_SERVICES.items():
                service = self._service(name)
                self._launch(service, desired, ready=True)
                self._sync(service)

    def _revision_arn(self, service: str, revision: int) -> str:
        return self.backend.describe_task_definition(f"{family(service)}:{revision}").arn

    # ---- the reconciler ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            with self._lock:
                for name in SEED_SERVICES:
                    self._reconcile(self._service(name))

    def _reconcile(self, service: Service) -> None:
        now = time.monotonic()
        for sim in self._of(service.name, "PENDING"):
            if sim.ready_at <= now:
                sim.task.last_status = "RUNNING"
                sim.task.containers[0].last_status = "RUNNING"
                sim.task.started_at = datetime.now(UTC)
        key = _deployment_key(service)
        current = [s for s in self._live(service.name) if s.deployment == key]
        missing = service.desired_count - len(current)
        if missing > 0:
            self._launch(service, missing, ready=False)
        elif missing < 0:  # scale in: pending ones first, then the newest
            surplus = sorted(current, key=lambda s: (s.task.last_status == "RUNNING", -s.ready_at))
            for sim in surplus[:-missing]:
                self._stop_task(sim.task, SCALE_IN_REASON.format(deployment=_dep_id(service)))
        current_running = [s for s in current if s.task.last_status == "RUNNING"]
        if len(current_running) >= service.desired_count:
            for sim in self._live(service.name):
                if sim.deployment != key:
                    self._stop_task(sim.task, REPLACED_REASON.format(deployment=_dep_id(service)))
        self._sync(service)

    def _launch(self, service: Service, count: int, ready: bool) -> None:
        key = _deployment_key(service)
        ready_at = time.monotonic() + (0 if ready else self.task_start_seconds)
        for task in self._new_tasks(service, count):
            task.last_status = "RUNNING" if ready else "PENDING"
            task.containers[0].last_status = task.last_status
            task.started_at = datetime.now(UTC) if ready else None
            self._tasks[task.task_arn] = SimTask(service.name, key, task, ready_at)

    def _new_tasks(self, service: Service, count: int) -> list[Task]:
        backend = self.backend
        cluster = backend.clusters[CLUSTER]
        task_def = backend.describe_task_definition(str(service.task_definition))
        tasks = []
        for _ in range(count):
            task = Task(
                cluster=cluster,
                task_definition=task_def,
                container_instance_arn=None,
                resource_requirements=None,
                backend=backend,
                group=f"service:{service.name}",
                launch_type="FARGATE",
                started_by=_dep_id(service),
                networking_configuration=self._network_config(),
            )
            task.health_status = "HEALTHY"
            task.created_at = datetime.now(UTC)
            backend.tasks.setdefault(CLUSTER, {})[task.task_arn] = task
            tasks.append(task)
        return tasks

    def _stop_task(
        self, task: Task, reason: str, stop_code: str = "ServiceSchedulerInitiated"
    ) -> None:
        task.last_status = "STOPPED"
        task.desired_status = "STOPPED"
        task.containers[0].last_status = "STOPPED"
        task.stopped_reason = reason
        task.stop_code = stop_code
        task.stopped_at = datetime.now(UTC)
        task.health_status = "UNKNOWN"

    def _forget(self, task_arn: str) -> None:
        self._tasks.pop(task_arn, None)
        self.backend.tasks.get(CLUSTER, {}).pop(task_arn, None)

    def _sync(self, service: Service) -> None:
        """Counts on the service and its PRIMARY deployment, from the tasks."""
        if service.name not in SEED_SERVICES:
            return
        running = len(self._of(service.name, "RUNNING"))
        pending = len(self._of(service.name, "PENDING"))
        service.running_count, service.pending_count = running, pending
        key = _deployment_key(service)
        current = [s for s in self._of(service.name, "RUNNING") if s.deployment == key]
        done = len(current) == running == service.desired_count and pending == 0
        if service.deployments:
            dep = service.deployments[0]
            dep.update(
                desiredCount=service.desired_count,
                runningCount=len(current),
                pendingCount=pending,
                taskDefinition=service.task_definition,
                rolloutState="COMPLETED" if done else "IN_PROGRESS",
                rolloutStateReason=f"ECS deployment {dep['id']} "
                + ("completed." if done else "in progress."),
            )

    # ---- helpers ----------------------------------------------------------------------------

    def _service(self, name: str) -> Service:
        return self.backend.services[f"{CLUSTER}:{name}"]

    def _of(self, service: str, status: str) -> list[SimTask]:
        return [
            s for s in self._tasks.values() if s.service == service and s.task.last_status == status
        ]

    def _live(self, service: str) -> list[SimTask]:
        return self._of(service, "PENDING") + self._of(service, "RUNNING")

    def _network_config(self) -> dict[str, Any]:
        if self._network is None:
            ec2 = ec2_backends[DEFAULT_ACCOUNT_ID][self._region]
            subnet = ec2.describe_subnets()[0].id
            group = ec2.describe_security_groups()[0].id
            self._network = {
                "awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group]}
            }
        return self._network


def _dep_id(service: Service) -> str:
    return str(service.deployments[0]["id"]) if service.deployments else "ecs-svc/none"


def _deployment_key(service: Service) -> str:
    return f"{service.task_definition}#{_dep_id(service)}"


def task_definition(service: str, image: str) -> dict[str, Any]:
    """A Fargate task definition like the service's: container named after the service."""
    return {
        "family": family(service),
        "requiresCompatibilities": ["FARGATE"],
        "networkMode": "awsvpc",
        "cpu": "1024",
        "memory": "2048",
        "containerDefinitions": [
            {
                "name": service,
                "image": f"revenue-context/{service}:{image}",
                "essential": True,
                # Its own hard limit, as the service's: a larger task alone does not lift it.
                "memory": 2048,
                "portMappings": [{"containerPort": 8000, "protocol": "tcp"}],
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": f"/ecs/production/{service}",
                        "awslogs-region": "us-east-1",
                        "awslogs-stream-prefix": "ecs",
                    },
                },
            }
        ],
    }
