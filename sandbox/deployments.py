"""What a completed ECS deployment changes in the simulated service.

sandbox/ecs.py runs the tasks and rolls deployments out; this watches each service's
PRIMARY deployment and, when one reaches COMPLETED, records the image it runs (`/health`
reports the image of `api`) and calls back (a new `api` deployment re-reads its config).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ecs.models import ecs_backends

from sandbox.ecs import CLUSTER, SEED_SERVICES

POLL_SECONDS = 0.2
OnDeployed = Callable[[str, str], None]  # (service, image)


def image_tag(image: str) -> str:
    return image.rpartition(":")[2] or image


def memory_limit(task_def: Any) -> int:
    """The MiB a task of the service may use: its task memory, or its container's own hard
    limit when lower (ECS kills the container there, whatever the task has)."""
    task = int(task_def.memory or 0)
    container = int(task_def.container_definitions[0].get("memory") or 0)
    return min(task, container) if task and container else task or container


class DeploymentWatch:
    def __init__(self, region: str, on_deployed: OnDeployed) -> None:
        self._region = region
        self._on_deployed = on_deployed
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[str, str]] = {}  # service -> (deployment id, task def)
        self.images: dict[str, str] = {}
        self.task_memory: dict[str, int] = {}
        self.completed: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deployments", daemon=True)

    def start(self) -> None:
        self.reset()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=3)

    def reset(self) -> None:
        """Take what runs now as the baseline, without calling back."""
        with self._lock:
            self._seen.clear()
            self.completed.clear()
            for name in SEED_SERVICES:
                primary = self._primary(name)
                if primary is not None:
                    self._record(name, primary)

    def image(self, service: str) -> str | None:
        with self._lock:
            return self.images.get(service)

    def memory(self, service: str) -> int | None:
        with self._lock:
            return self.task_memory.get(service)

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            for name in SEED_SERVICES:
                try:
                    self._check(name)
                except Exception:  # a moto object mid-change: look again next time
                    continue

    def _check(self, service: str) -> None:
        primary = self._primary(service)
        if primary is None or primary.get("rolloutState") != "COMPLETED":
            return
        with self._lock:
            if self._seen.get(service) == (primary["id"], primary["taskDefinition"]):
                return
            image = self._record(service, primary)
            self.completed[service] = self.completed.get(service, 0) + 1
        self._on_deployed(service, image)

    def _record(self, service: str, primary: dict[str, Any]) -> str:
        task_def = self._backend().describe_task_definition(primary["taskDefinition"])
        image = task_def.container_definitions[0]["image"]
        self._seen[service] = (primary["id"], primary["taskDefinition"])
        self.images[service] = image
        self.task_memory[service] = memory_limit(task_def)
        return str(image)

    def _primary(self, service: str) -> dict[str, Any] | None:
        svc = self._backend().services.get(f"{CLUSTER}:{service}")
        if svc is None or not svc.deployments:
            return None
        return dict(svc.deployments[0])

    def _backend(self) -> Any:
        return ecs_backends[DEFAULT_ACCOUNT_ID][self._region]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                name: {
                    "image": self.images.get(name),
                    "memory": self.task_memory.get(name),
                    "completed_deployments": self.completed.get(name, 0),
                }
                for name in SEED_SERVICES
            }
