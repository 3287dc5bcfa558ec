"""rollback: a bad deploy.

`POST /control/incidents/rollback` (body optional: `{"image_tag": "v1.5.0", "services":
[...]}`) deploys a new task-definition revision with a bad image tag to the services (an
identical revision is reused, so injecting twice registers nothing new) and returns once ECS
runs it. While any service runs a bad tag, `/health` answers 503 `degraded` with the version
`api` runs and the smoke-test failure; a rollback to a good revision brings back 200 `ok` with
the old version. `DELETE` forgets which tags are bad (the services stay where they are).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from sandbox.deployments import image_tag
from sandbox.ecs import CLUSTER, SEED_SERVICES, family, task_definition
from sandbox.replies import BadRequest
from sandbox.systems import Systems

NAME = "rollback"
BAD_TAG = "v1.5.0"
FAILURE = "{tag} fails its smoke tests: 5xx on POST /v1/context ({services})"
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DEPLOY_WAIT_SECONDS = 60


class BadDeploy:
    def __init__(self, systems: Systems) -> None:
        self.systems = systems
        self._lock = threading.Lock()
        self.bad_tags: set[str] = set()

    def reset(self) -> None:
        with self._lock:
            self.bad_tags.clear()

    def inject(self, body: Any) -> None:
        """Deploy the bad tag to the services and wait until ECS runs it everywhere."""
        given = body if isinstance(body, dict) else {}
        tag = given.get("image_tag", BAD_TAG)
        services = given.get("services", list(SEED_SERVICES))
        if not isinstance(tag, str) or not TAG.fullmatch(tag):
            raise BadRequest("image_tag must be an image tag (letters, digits, _ . -)")
        if not isinstance(services, list) or not services or set(services) - set(SEED_SERVICES):
            raise BadRequest(f"services must be a list of: {', '.join(SEED_SERVICES)}")
        if self.systems.aws is None:
            raise BadRequest("AWS is not simulated (start the sandbox with --moto-port)", 409)
        with self._lock:
            self.bad_tags.add(tag)
        ecs = self.systems.aws.client("ecs")
        for service in services:
            arn = revision_with(ecs, service, tag)
            ecs.update_service(cluster=CLUSTER, service=service, taskDefinition=arn)
        deadline = time.monotonic() + DEPLOY_WAIT_SECONDS
        while time.monotonic() < deadline:
            if all(image_tag(self._image(s)) == tag for s in services):
                return
            time.sleep(0.1)

    def failing(self) -> list[str]:
        """The services that run a bad tag now."""
        with self._lock:
            bad = set(self.bad_tags)
        return [s for s in SEED_SERVICES if image_tag(self._image(s)) in bad]

    def health(self, version: str) -> tuple[int, dict[str, Any]]:
        """What `/health` answers: the version `api` runs; degraded on a bad deploy."""
        failing = self.failing()
        if not failing:
            return 200, {"status": "ok", "version": version}
        tags = sorted({image_tag(self._image(s)) for s in failing})
        error = FAILURE.format(tag=", ".join(tags), services=", ".join(failing))
        return 503, {"status": "degraded", "version": version, "error": error}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"bad_tags": sorted(self.bad_tags)}

    def _image(self, service: str) -> str:
        return self.systems.deployments.image(service) or ""


def revision_with(ecs: Any, service: str, tag: str) -> str:
    """The ARN of an ACTIVE revision of the service's family running `tag`; registered when
    there is none."""
    image = f"revenue-context/{service}:{tag}"
    pages = ecs.get_paginator("list_task_definitions").paginate(
        familyPrefix=family(service), status="ACTIVE"
    )
    for arn in (a for page in pages for a in page.get("taskDefinitionArns", [])):
        td = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        if td["containerDefinitions"][0].get("image") == image:
            return str(arn)
    registered = ecs.register_task_definition(**task_definition(service, tag))
    return str(registered["taskDefinition"]["taskDefinitionArn"])
