"""The llm-budget activities against real parts: moto's Secrets Manager and ECS in the
sandbox, Valkey, the service's `/metrics`."""

import json
import uuid

import boto3
import httpx
import pytest
import redis.asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws_access import AwsAccess
from activities.cloudwatch import CloudWatchActivities, MetricRequest
from activities.ecs import EcsActivities, ServicesRequest
from activities.ecs_rollout import ForceDeploymentRequest, WaitRolloutRequest
from activities.llm import (
    BudgetPolicy,
    LlmActivities,
    LlmMetricsRequest,
    SpendRequest,
    WaitBudgetRequest,
)
from activities.secrets import SecretNumberRequest, SecretsActivities, SetSecretNumberRequest
from tests.temporal_env import run_activity

SECRET = "prod/revenue-context/config"
KEY = "LLM_DAILY_BUDGET"


@pytest.fixture
def secrets(aws_env: dict[str, str]) -> SecretsActivities:
    return SecretsActivities(AwsAccess())


def token() -> str:
    return uuid.uuid4().hex


def test_budget_change_keeps_every_other_key_and_happens_once(
    sandbox: httpx.Client, secrets: SecretsActivities
) -> None:
    sm = boto3.client("secretsmanager")
    before = json.loads(sm.get_secret_value(SecretId=SECRET)["SecretString"])
    read = run_activity(secrets.read_number, SecretNumberRequest(secret_id=SECRET, key=KEY))
    assert (read.value, read.key_count) == (100.0, len(before))

    ask = SetSecretNumberRequest(secret_id=SECRET, key=KEY, value=200, client_request_token=token())
    first = run_activity(secrets.set_number, ask)
    retry = run_activity(secrets.set_number, ask)  # the same step again, e.g. after a lost answer

    after = json.loads(sm.get_secret_value(SecretId=SECRET)["SecretString"])
    assert after == {**before, KEY: "200.0"}  # every other key kept, the type too
    assert first.changed and (first.old_value, first.new_value) == (100.0, 200.0)
    assert first.previous_version_id == read.version_id
    assert first.version_id == ask.client_request_token
    assert not retry.changed and retry.version_id == first.version_id
    assert retry.previous_version_id == read.version_id  # the undo target survives a retry
    versions = sm.list_secret_version_ids(SecretId=SECRET)["Versions"]
    assert len(versions) == 2
    # No secret value leaves the activity.
    for result in (read, first, retry):
        dumped = result.model_dump_json()
        assert not any(v in dumped for k, v in before.items() if k != KEY)


def test_unknown_secret_or_key_is_refused_naming_the_field(
    sandbox: httpx.Client, secrets: SecretsActivities
) -> None:
    with pytest.raises(ApplicationError) as no_secret:
        run_activity(secrets.read_number, SecretNumberRequest(secret_id="prod/nope", key=KEY))
    with pytest.raises(ApplicationError) as no_key:
        run_activity(secrets.read_number, SecretNumberRequest(secret_id=SECRET, key="LLM_BUDGET"))
    assert no_secret.value.non_retryable and "secret_id" in str(no_secret.value)
    assert no_key.value.non_retryable and "key: " in str(no_key.value)
    assert "sk-" not in str(no_key.value)


async def test_spend_metrics_and_call_rate_show_the_incident(
    sandbox: httpx.Client, sandbox_url: str, redis_url: str, aws_env: dict[str, str]
) -> None:
    cw = CloudWatchActivities(boto3.client("cloudwatch"))
    rate_ask = MetricRequest(
        namespace="RevenueContext/LLM",
        metric_name="LlmApiCalls",
        dimensions={"Service": "api"},
        minutes=60,
        statistics=["Sum"],
    )
    calm = run_activity(cw.metric_statistics, rate_ask)
    sandbox.post("/control/incidents/llm-budget").raise_for_status()
    burst = run_activity(cw.metric_statistics, rate_ask)
    client = redis.asyncio.Redis.from_url(redis_url)
    async with httpx.AsyncClient() as http:
        llm = LlmActivities(
            client, http, sandbox_url, "llm:spend:global:", BudgetPolicy(minimum=1, maximum=500)
        )
        env = ActivityEnvironment()
        spend = await env.run(llm.spend, SpendRequest())
        metrics = await env.run(llm.metrics, LlmMetricsRequest())
    await client.aclose()
    assert spend.found and spend.spend == pytest.approx(100.0, abs=0.01)
    assert spend.key.startswith("llm:spend:global:20")
    assert metrics.budget["llm_budget_daily_usd"] == 100.0
    assert metrics.budget["llm_budget_exhausted"] == 1.0
    assert metrics.calls_total > 0
    total = lambda s: sum(p.values["Sum"] for p in s.datapoints)  # noqa: E731
    assert total(burst) > 3 * total(calm) > 0


async def test_raised_budget_is_in_force_only_after_a_new_deployment(
    sandbox: httpx.Client, sandbox_url: str, redis_url: str, secrets: SecretsActivities
) -> None:
    ecs = EcsActivities(AwsAccess())
    [api] = run_activity(ecs.describe_services, ServicesRequest(services=["api"])).services
    seen = api.deployments[0].id
    run_activity(
        secrets.set_number,
        SetSecretNumberRequest(secret_id=SECRET, key=KEY, value=250, client_request_token=token()),
    )
    client = redis.asyncio.Redis.from_url(redis_url)
    async with httpx.AsyncClient() as http:
        llm = LlmActivities(
            client, http, sandbox_url, "llm:spend:global:", BudgetPolicy(minimum=1, maximum=500)
        )
        env = ActivityEnvironment()
        still = await env.run(llm.metrics, LlmMetricsRequest())
        started = run_activity(
            ecs.force_new_deployment, ForceDeploymentRequest(service="api", seen_deployment_id=seen)
        )
        again = run_activity(
            ecs.force_new_deployment, ForceDeploymentRequest(service="api", seen_deployment_id=seen)
        )
        done = run_activity(
            ecs.wait_rollout,
            WaitRolloutRequest(
                service="api", deployment_id=started.deployment_id, poll_seconds=0.2
            ),
        )
        in_force = await env.run(
            llm.wait_budget_in_force, WaitBudgetRequest(expected=250, poll_seconds=0.2)
        )
    await client.aclose()
    assert still.budget["llm_budget_daily_usd"] == 100.0  # the secret alone changes nothing
    assert started.started and started.deployment_id != seen
    assert not again.started and again.deployment_id == started.deployment_id
    assert done.rollout_state == "COMPLETED" and done.running_count == done.desired_count
    assert in_force.budget["llm_budget_daily_usd"] == 250.0
    assert in_force.budget["llm_budget_exhausted"] == 0.0
