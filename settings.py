"""Configuration from the environment; defaults are the runbook's names.

AWS goes through boto3's own chain (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL) and Temporal
through the SDK's environment configuration (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TLS, API
key), so neither is duplicated here.
"""

import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

PROJECT_DIR = Path(__file__).resolve().parent


ENVIRONMENT_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


class UnknownEnvironment(ValueError):
    """An environment no profile describes; the message names the known ones."""


class EnvironmentProfile(BaseModel):
    """One environment (staging, production): its AWS account, region and roles, its task
    queue, Slack channel and the names of its resources. A section of the environments file
    (RUNBOOK_ENVIRONMENTS), or, without one, `production` from the variables below."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=ENVIRONMENT_NAME.pattern)
    # Alarms from this account and region are routed to this environment.
    aws_account_id: str | None = Field(None, pattern=r"^\d{12}$")
    aws_region: str | None = None
    # Diagnosis reads with this role; unset: the worker's own identity.
    read_role_arn: str | None = None
    # Mutations assume this role (`{procedure}` is the procedure's CLI name); unset: the
    # worker's own identity.
    mutate_role_arn: str | None = None
    task_queue: str = Field("runbooks", min_length=1, max_length=200)
    slack_channel: str | None = None
    api_base_url: str | None = None
    # Input defaults by field name (`cluster`, `db_instance_id`, ...); a table named after a
    # procedure holds that procedure's own (`[production.inputs.kafka-lag]`).
    inputs: dict[str, Any] = {}

    def input_defaults(self, procedure: str) -> dict[str, Any]:
        shared = {k: v for k, v in self.inputs.items() if not isinstance(v, dict)}
        own = self.inputs.get(procedure)
        return {**shared, **(own if isinstance(own, dict) else {})}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    # Temporal
    task_queue: str = Field("runbooks", alias="RUNBOOK_TASK_QUEUE")
    temporal_ui_url: str = Field("http://127.0.0.1:8233", alias="TEMPORAL_UI_URL")
    # The worker's Prometheus metrics (the SDK's: polls, slots, task latencies; the runbooks'
    # own, workflows/metrics.py) on this port; unset: none. The image's health check reads it.
    metrics_port: int | None = Field(None, ge=1, le=65535, alias="RUNBOOK_METRICS_PORT")
    metrics_host: str = Field("0.0.0.0", alias="RUNBOOK_METRICS_HOST")
    # Worker Deployment Versioning (README, "Deploying a new version"): with both set, the
    # worker polls as this version of the deployment and a run stays pinned to the version it
    # started on; neither: an unversioned worker (the local stack), patching alone.
    deployment_name: str | None = Field(
        None, pattern=r"^[\w-]{1,100}$", alias="RUNBOOK_DEPLOYMENT_NAME"
    )
    build_id: str | None = Field(None, pattern=r"^[\w.+-]{1,100}$", alias="RUNBOOK_BUILD_ID")
    # On SIGTERM the worker stops polling and lets running activities finish for this long
    # (then cancels them: Temporal retries them elsewhere). Below the pod's grace period.
    shutdown_seconds: float = Field(50, ge=0, le=3600, alias="RUNBOOK_SHUTDOWN_SECONDS")

    # The Revenue Context Engine (runbook.md, "Quick Reference" and procedures)
    api_base_url: str = Field("https://api.prod.revenue-context.com", alias="API_BASE_URL")
    database_url: str = Field("postgresql://127.0.0.1:5432/revenue_context", alias="DATABASE_URL")
    redis_url: str = Field("redis://127.0.0.1:6379/0", alias="REDIS_URL")
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", alias="KAFKA_BOOTSTRAP_SERVERS")

    # Notifications
    slack_webhook_url: str | None = Field(None, alias="SLACK_WEBHOOK_URL")
    # A Slack app (a secret bot token, chat:write): the approval message with buttons,
    # updated in place, the run's later messages in its thread; in place of the webhook.
    slack_bot_token: SecretStr | None = Field(None, alias="SLACK_BOT_TOKEN")

    @field_validator("slack_bot_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """SLACK_BOT_TOKEN= (empty) is no Slack app: the webhook posts, as without it."""
        return None if value == "" else value

    slack_api_url: str = Field("https://slack.com/api/", alias="SLACK_API_URL")
    cloudwatch_dashboard_url: str = Field(
        "https://console.aws.amazon.com/cloudwatch/home?region=us-east-1"
        "#dashboards:name=production-revenue-context",
        alias="CLOUDWATCH_DASHBOARD_URL",
    )
    grafana_url: str = Field("https://grafana.company.com/d/revenue-context", alias="GRAFANA_URL")
    # A secret like the Slack webhook URL: PagerDuty is paged only when it is set.
    pagerduty_routing_key: str | None = Field(None, alias="PAGERDUTY_ROUTING_KEY")
    pagerduty_events_url: str = Field(
        "https://events.pagerduty.com/v2/enqueue", alias="PAGERDUTY_EVENTS_URL"
    )
    # Escalations are emailed (Amazon SES) from this verified address to the runbook's
    # contacts (runbook.md, "Emergency Contacts"; JSON, role -> address); unset: Slack only.
    email_from: str | None = Field(None, alias="RUNBOOK_EMAIL_FROM")
    contacts: dict[str, str] = Field(
        {"dba": "dba@company.com", "devops": "devops@company.com"}, alias="RUNBOOK_CONTACTS"
    )
    # The P3 ticket queue: GitHub issues of this repository (owner/name), with this token (a
    # secret); without both, a P3 gate opens no ticket (and still pages nobody).
    tickets_github_repo: str | None = Field(None, alias="RUNBOOK_TICKETS_GITHUB_REPO")
    tickets_github_token: SecretStr | None = Field(None, alias="RUNBOOK_TICKETS_GITHUB_TOKEN")
    tickets_github_url: str = Field("https://api.github.com", alias="RUNBOOK_TICKETS_GITHUB_URL")

    # Approval gates (runbook.md, "Response Time SLAs" and "Escalation Matrix")
    roster_file: Path | None = Field(None, alias="RUNBOOK_ROSTER")
    approver_keys_file: Path | None = Field(None, alias="RUNBOOK_APPROVER_KEYS")
    response_minutes: dict[str, int] = Field(
        {"P0": 15, "P1": 60, "P2": 240}, alias="RUNBOOK_RESPONSE_MINUTES"
    )
    business_hours: str = Field("09:00-17:00", alias="RUNBOOK_BUSINESS_HOURS")
    business_timezone: str = Field("UTC", alias="RUNBOOK_TIMEZONE")
    # Procedures whose action needs two distinct approvers, comma-separated.
    two_approvers: str = Field("", alias="RUNBOOK_TWO_APPROVERS")
    # Game days and tests: a run's `approval_timeout_seconds` may shorten each escalation
    # level's time. Off: the SLA clock is this worker's alone, whatever a start input says.
    game_day: bool = Field(False, alias="RUNBOOK_GAME_DAY")
    # The alarm webhook's and the schedules' key: what they start is signed with it, so the
    # worker can tell a real alarm from a start that only says it is one (a secret).
    intake_key: SecretStr | None = Field(None, alias="RUNBOOK_INTAKE_KEY")

    # LLM budget (runbook.md, procedure 4): the range an approver may set the daily budget
    # to, in USD, and where the service counts today's spend in Redis.
    llm_budget_min: float = Field(1.0, gt=0, alias="LLM_BUDGET_MIN")
    llm_budget_max: float = Field(1000.0, gt=0, alias="LLM_BUDGET_MAX")
    llm_spend_key_prefix: str = Field("llm:spend:global:", alias="LLM_SPEND_KEY_PREFIX")
    # The spend watch's budget when the service's `/metrics` does not tell it (USD).
    llm_daily_budget: float | None = Field(None, gt=0, alias="RUNBOOK_LLM_DAILY_BUDGET")

    # The resources the procedures act on (runbook.md's production names). Without an
    # environments file they are the one environment's `inputs` (resource_inputs): the CLI
    # and the intake put them in every start's input (`--set` still wins), so the workflows
    # get them in their input and never read the environment. The input models' own defaults
    # (a start from the Temporal UI with `{}`) are the same names (tests/test_settings.py).
    rds_instance_id: str = Field("prod-revenue-context-db", alias="RDS_INSTANCE_ID")
    ecs_cluster: str = Field("prod-revenue-context", alias="ECS_CLUSTER")
    api_service: str = Field("api", alias="ECS_API_SERVICE")  # high-memory, api-errors, llm-budget
    consumer_service: str = Field("context-engine", alias="ECS_CONSUMER_SERVICE")  # kafka-lag
    # Rollback's and triage's services, comma-separated.
    ecs_services: str = Field("api,context-engine,orchestration-engine", alias="ECS_SERVICES")
    config_secret_id: str = Field("prod/revenue-context/config", alias="CONFIG_SECRET_ID")
    kafka_topic: str = Field("signals.raw", alias="KAFKA_TOPIC")
    kafka_dlq_topic: str = Field("signals.raw.dlq", alias="KAFKA_DLQ_TOPIC")
    kafka_consumer_group: str = Field("context_engine_group", alias="KAFKA_CONSUMER_GROUP")
    api_log_group: str = Field("/ecs/production/api", alias="API_LOG_GROUP")
    consumer_log_group: str = Field("/ecs/production/context-engine", alias="CONSUMER_LOG_GROUP")
    api_domain: str = Field("api.prod.revenue-context.com", alias="API_DOMAIN")  # cert-renewal

    # Certificate renewal (runbook.md, procedure 7): the load balancers whose HTTPS listeners
    # serve the API, comma-separated; `*` for every load balancer of the region.
    alb_names: str = Field("prod-revenue-context-alb", alias="ALB_NAMES")

    # Resource locks (workflows/lock.py): how often a lock asks whether its holder still runs
    # (a terminated holder is released within about this long).
    lock_check_seconds: float = Field(15.0, ge=0.1, le=3600, alias="RUNBOOK_LOCK_CHECK_SECONDS")
    lock_linger_seconds: float = Field(30.0, ge=0, le=3600, alias="RUNBOOK_LOCK_LINGER_SECONDS")

    # The incident log: the project's own database, never the one being failed over.
    runbook_database_url: str | None = Field(None, alias="RUNBOOK_DATABASE_URL")

    # Environments: a TOML file with one section per environment (deploy/environments.toml);
    # unset: one environment, `production`, from this process's own variables.
    environments_file: Path | None = Field(None, alias="RUNBOOK_ENVIRONMENTS")
    # The environment this process works in: the one a worker serves, the CLI's default.
    environment: str | None = Field(None, alias="RUNBOOK_ENV")
    # Without an environments file: the one environment's account and AWS roles.
    aws_account_id: str | None = Field(None, alias="RUNBOOK_AWS_ACCOUNT_ID")
    aws_read_role_arn: str | None = Field(None, alias="RUNBOOK_AWS_READ_ROLE_ARN")
    aws_mutate_role_arn: str | None = Field(None, alias="RUNBOOK_AWS_MUTATE_ROLE_ARN")
    slack_channel: str | None = Field(None, alias="RUNBOOK_SLACK_CHANNEL")
    # Shadow mode: every run is a dry run and no AWS call may change anything.
    read_only: bool = Field(False, alias="RUNBOOK_READ_ONLY")

    # The embedded local stack keeps its pid files, logs and data here.
    state_dir: Path = Field(PROJECT_DIR / ".runbook", alias="RUNBOOK_STATE_DIR")

    def profiles(self) -> dict[str, EnvironmentProfile]:
        """Every environment by name; the file's first section is the default."""
        if self.environments_file is None:
            single = EnvironmentProfile(
                name=self.environment or "production",
                aws_account_id=self.aws_account_id,
                read_role_arn=self.aws_read_role_arn,
                mutate_role_arn=self.aws_mutate_role_arn,
                task_queue=self.task_queue,
                slack_channel=self.slack_channel,
                api_base_url=self.api_base_url,
                inputs=self.resource_inputs(),
            )
            return {single.name: single}
        return load_profiles(self.environments_file)

    def resource_inputs(self) -> dict[str, Any]:
        """The resource names as an environment's `inputs`: by field name, and a table for
        the procedures whose field of that name means another resource."""
        api = {"service": self.api_service, "log_group": self.api_log_group}
        services = [name.strip() for name in self.ecs_services.split(",") if name.strip()]
        return {
            "db_instance_id": self.rds_instance_id,
            "cluster": self.ecs_cluster,
            "secret_id": self.config_secret_id,
            "topic": self.kafka_topic,
            "dlq_topic": self.kafka_dlq_topic,
            "consumer_group": self.kafka_consumer_group,
            "domain": self.api_domain,
            "high-memory": {"service": self.api_service},
            "api-errors": api,
            "kafka-lag": {"service": self.consumer_service, "log_group": self.consumer_log_group},
            "llm-budget": {"services": [self.api_service]},
            "rollback": {"services": services},
            "triage": {"services": services},
        }

    def metrics_address(self) -> str | None:
        return f"{self.metrics_host}:{self.metrics_port}" if self.metrics_port else None

    def profile(self, name: str | None = None) -> EnvironmentProfile:
        """The named environment, else RUNBOOK_ENV, else the first one."""
        profiles = self.profiles()
        chosen = name or self.environment or next(iter(profiles))
        if chosen not in profiles:
            raise UnknownEnvironment(
                f"environment {chosen!r} is not known; known: {', '.join(profiles)}"
            )
        return profiles[chosen]


def load_profiles(path: Path) -> dict[str, EnvironmentProfile]:
    """The environments file: `[production]`, `[staging]`, ... each a profile."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise UnknownEnvironment(f"RUNBOOK_ENVIRONMENTS {str(path)!r}: {err}") from None
    profiles: dict[str, EnvironmentProfile] = {}
    for name, section in raw.items():
        if not isinstance(section, dict):
            raise UnknownEnvironment(f"RUNBOOK_ENVIRONMENTS: {name!r} is not a [section]")
        try:
            profiles[name] = EnvironmentProfile.model_validate({**section, "name": name})
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()
            )
            raise UnknownEnvironment(f"RUNBOOK_ENVIRONMENTS [{name}]: {problems}") from None
    if not profiles:
        raise UnknownEnvironment(f"RUNBOOK_ENVIRONMENTS {str(path)!r}: no environment")
    return profiles


@lru_cache
def get_settings() -> Settings:
    return Settings()


def metrics_runtime(bind_address: str) -> Runtime:
    """A Temporal runtime serving its metrics (the SDK's and the runbooks') for Prometheus."""
    from workflows.metrics import BUCKETS  # the worker's: not on every CLI command's path

    prometheus = PrometheusConfig(bind_address=bind_address, histogram_bucket_overrides=BUCKETS)
    return Runtime(telemetry=TelemetryConfig(metrics=prometheus))


async def temporal_client(metrics_address: str | None = None, tracer: Any = None) -> Client:
    """Temporal through the SDK's environment configuration (TEMPORAL_ADDRESS, namespace, TLS,
    API key), with the pydantic converter every client, worker and replayer shares;
    `metrics_address`: host:port to serve the metrics on (the worker's); `tracer`: trace
    starts, signals and (on a worker) workflows and activities (telemetry.py)."""
    from telemetry import client_interceptors

    config = ClientConfig.load_client_connect_config()
    config.setdefault("target_host", "localhost:7233")
    runtime = metrics_runtime(metrics_address) if metrics_address else None
    return await Client.connect(
        **config,
        data_converter=pydantic_data_converter,
        runtime=runtime,
        interceptors=client_interceptors(tracer),
    )
