"""What the activity tests share: the session's sandbox with ECS tasks that start in 0.3 s,
and the ECS activities on the sandbox's moto."""

import httpx
import pytest

from activities.aws_access import AwsAccess
from activities.ecs import EcsActivities


@pytest.fixture
def sandbox(sandbox: httpx.Client) -> httpx.Client:
    sandbox.post("/control/ecs", json={"task_start_seconds": 0.3}).raise_for_status()
    return sandbox


@pytest.fixture
def ecs(aws_env: dict[str, str]) -> EcsActivities:
    return EcsActivities(AwsAccess())
