"""The worker: every workflow and activity on one task queue, clients built once."""

import asyncio
import json
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import boto3
import httpx
import psycopg
import pydantic
import redis.asyncio
from botocore.config import Config
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError
from temporalio.worker import Worker, WorkerDeploymentConfig
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.acm import AcmActivities
from activities.alarms import AlarmActivities, AlarmStarter
from activities.approvals import ApprovalActivities, EscalationPolicy, business_hours
from activities.aws_access import AwsAccess
from activities.cloudwatch import CloudWatchActivities
from activities.decision_guard import DecisionGuard
from activities.ecs import EcsActivities
from activities.elb import ElbActivities
from activities.email import EmailActivities
from activities.handoffs import HandoffActivities
from activities.health import HealthActivities
from activities.incidents import IncidentActivities, migrate
from activities.kafka import KafkaActivities
from activities.llm import BudgetPolicy, LlmActivities
from activities.locks import LockActivities, LockConfig
from activities.logs import LogsActivities
from activities.notify import Link, NotifyActivities, PagerDutyConfig
from activities.postgres import PostgresActivities
from activities.postgres_queries import QueryActivities
from activities.prometheus import PrometheusActivities
from activities.rds import RdsActivities
from activities.redis_info import RedisActivities
from activities.requesters import EarlierRuns
from activities.route53 import Route53Activities
from activities.secrets import SecretsActivities
from activities.slack_app import SlackApp
from activities.spend import SpendActivities
from activities.tickets import GitHubTickets, TicketActivities
from activities.worker_mode import WorkerModeActivities
from client.namespace import NamespaceNotReady, check_namespace
from settings import (
    EnvironmentProfile,
    Settings,
    UnknownEnvironment,
    get_settings,
    temporal_client,
)
from telemetry import (
    client_tracer,
    configure_logging,
    flush_traces,
    process_tracer,
    secret_values,
)
from workflows.metrics import ActivityAttemptsInterceptor, watch_gates
from workflows.registry import PROCEDURES
from workflows.replay import EVERY_WORKFLOW, INTERCEPTORS

log = logging.getLogger("runbook.worker")

# Standard retry mode backs off on throttling; timeouts keep a hung endpoint from pinning a
# thread for longer than the activity's own timeout.
AWS_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5, read_timeout=20
)


# The project's workflow modules pass through the workflow sandbox instead of being imported
# again for every run: they hold classes and constants, no state a run could change (the
# sandbox still checks what workflow code calls). Re-importing them rebuilt every pydantic
# model of workflows/ per run and kept a copy per cached run: with 1000 runs waiting at their
# gates the worker held 0.8 MB a run and first workflow tasks took over 5 s (bench/scale.py).
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows", "opentelemetry")
)


def worker_secrets(settings: Settings) -> list[str]:
    """The secret values the worker holds: masked wherever they reach a log line."""
    return secret_values(
        settings.slack_webhook_url,
        settings.slack_bot_token,
        settings.pagerduty_routing_key,
        settings.intake_key,
        settings.runbook_database_url,
        settings.database_url,
    )


def migrate_incident_log(settings: Settings) -> None:
    """At start, so the schema is ready; a database that is down must not stop the worker
    (remediation goes on; incident records wait for the database)."""
    if not settings.runbook_database_url:
        log.warning("RUNBOOK_DATABASE_URL is not set: incidents will not be recorded")
        return
    try:
        result = migrate(settings.runbook_database_url)
    except psycopg.Error as err:
        log.warning("incident log not migrated (database unavailable: %s)", type(err).__name__)
        return
    log.info("incident log schema at version %s (applied %s)", result.version, result.applied)


def escalation_policy(settings: Settings) -> EscalationPolicy:
    return EscalationPolicy(
        response_minutes=settings.response_minutes,
        business_hours=business_hours(settings.business_hours),
        timezone=settings.business_timezone,
        two_approvers=frozenset(p.strip() for p in settings.two_approvers.split(",") if p.strip()),
        paging=bool(settings.pagerduty_routing_key),
        tickets=bool(settings.tickets_github_repo and settings.tickets_github_token),
        game_day=settings.game_day,
    )


def earlier_runs(client: Client) -> EarlierRuns:
    """The runs of a workflow id started since a time (Temporal's visibility) whose start
    carried the proof with `signature`: a signed start proves its requester for the first of
    them only. (Other runs of the id, e.g. one rejected a minute before, do not count.)"""

    async def since(workflow_id: str, when: datetime, signature: str) -> list[tuple[str, datetime]]:
        if "'" in workflow_id or "\\" in workflow_id:
            raise ValueError(f"workflow id {workflow_id!r} cannot be looked up")
        query = f"WorkflowId = '{workflow_id}' AND StartTime >= '{when.isoformat()}'"
        runs = [(run.run_id, run.start_time) async for run in client.list_workflows(query)]
        return [
            (run_id, started)
            for run_id, started in runs
            if await start_signature(client, workflow_id, run_id) in (signature, None)
        ]

    return since


async def start_signature(client: Client, workflow_id: str, run_id: str) -> str | None:
    """The proof signature in a run's start input; None when it cannot be read (counted as
    carrying it: a run we cannot read never makes a proof good twice)."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        async for event in handle.fetch_history_events():
            started = event.workflow_execution_started_event_attributes
            fields = json.loads(started.input.payloads[0].data)
            proof = fields.get("requester_proof") or {}
            return str(proof.get("signature", ""))
    except (RPCError, ValueError, IndexError, AttributeError):
        return None
    return None


def ticket_activities(settings: Settings, http: httpx.AsyncClient) -> TicketActivities:
    repo, token = settings.tickets_github_repo, settings.tickets_github_token
    github = GitHubTickets(repo=repo, api_url=settings.tickets_github_url) if repo else None
    return TicketActivities(http, github, token.get_secret_value() if token else None)


def aws_access(settings: Settings, profile: EnvironmentProfile, tracer: Any = None) -> AwsAccess:
    """The environment's AWS roles: read for diagnosis, each procedure's mutate role only
    inside its mutating activities (activities/aws_access.py)."""
    return AwsAccess(
        boto3.session.Session(),
        AWS_CONFIG,
        region=profile.aws_region,
        read_role_arn=profile.read_role_arn,
        mutate_role_arn=profile.mutate_role_arn,
        procedures={p.workflow_type: p.name for p in PROCEDURES.values()},
        read_only=settings.read_only,
        tracer=tracer,
    )


# Where the Slack app posts when the environment names no channel (deploy/environments.toml's).
DEFAULT_SLACK_CHANNEL = "#incidents"


def slack_app(settings: Settings, profile: EnvironmentProfile) -> SlackApp | None:
    """The Slack app when a bot token is set: it posts to the environment's channel."""
    if settings.slack_bot_token is None:
        return None
    token = settings.slack_bot_token.get_secret_value()
    channel = profile.slack_channel or DEFAULT_SLACK_CHANNEL
    return SlackApp(token, settings.slack_api_url, channel)


def build_activities(
    client: Client, settings: Settings, http: httpx.AsyncClient, profile: EnvironmentProfile
) -> list[Any]:
    """Every activity of the procedures, each system's client built once."""
    aws = aws_access(settings, profile, client_tracer(client))  # traced when the client is
    ecs = EcsActivities(aws)
    acm = AcmActivities(aws)
    albs = [name.strip() for name in settings.alb_names.split(",") if name.strip()]
    elb = ElbActivities(aws, albs)
    route53 = Route53Activities(aws)
    rds = RdsActivities(aws)
    secrets = SecretsActivities(aws)
    api_base_url = profile.api_base_url or settings.api_base_url
    health = HealthActivities(api_base_url, http)
    prometheus = PrometheusActivities(api_base_url, http)
    kafka = KafkaActivities(settings.kafka_bootstrap_servers)
    postgres = PostgresActivities(settings.database_url)
    queries = QueryActivities(settings.database_url)
    llm = LlmActivities(
        redis.asyncio.Redis.from_url(settings.redis_url, socket_timeout=10),
        http,
        api_base_url,
        settings.llm_spend_key_prefix,
        BudgetPolicy(minimum=settings.llm_budget_min, maximum=settings.llm_budget_max),
    )
    notify = NotifyActivities(
        settings.slack_webhook_url,
        http,
        settings.temporal_ui_url,
        [
            Link(label="CloudWatch", url=settings.cloudwatch_dashboard_url),
            Link(label="Grafana", url=settings.grafana_url),
        ],
        PagerDutyConfig(settings.pagerduty_routing_key, settings.pagerduty_events_url),
        profile.slack_channel,
        slack_app(settings, profile),
    )
    incidents = IncidentActivities(settings.runbook_database_url)
    ses = aws.client("ses") if settings.email_from else None
    email = EmailActivities(ses, settings.email_from, settings.contacts)
    tickets = ticket_activities(settings, http)
    intake_key = settings.intake_key.get_secret_value() if settings.intake_key else None
    approvals = ApprovalActivities(
        escalation_policy(settings),
        settings.roster_file,
        settings.approver_keys_file,
        intake_key=intake_key,
        earlier_runs=earlier_runs(client),
    )
    locks = LockActivities(
        LockConfig(
            check_seconds=settings.lock_check_seconds, linger_seconds=settings.lock_linger_seconds
        )
    )
    return [
        *(acm.describe_certificates, acm.list_certificates, acm.request_certificate),
        acm.wait_issued,
        CloudWatchActivities(aws.client("cloudwatch")).metric_statistics,
        *(ecs.describe_services, ecs.describe_task_definition, ecs.list_revisions),
        *(ecs.list_tasks, ecs.scale_service, ecs.wait_running, ecs.force_new_deployment),
        *(ecs.wait_rollout, ecs.register_memory_revision, ecs.use_task_definition),
        *(elb.https_listeners, elb.set_listener_certificate),
        *(health.check, health.wait_healthy),
        *(kafka.consumer_lag, kafka.peek_dlq),
        *(llm.spend, llm.metrics, llm.budget_policy, llm.wait_budget_in_force),
        LogsActivities(aws.client("logs")).recent_errors,
        postgres.idle_in_transaction,
        *(queries.slow_queries, queries.connections),
        *(prometheus.scrape, prometheus.circuit_breakers, prometheus.error_rate),
        *(rds.describe_instance, rds.force_failover, rds.wait_available),
        RedisActivities(settings.redis_url).info_stats,
        *(route53.find_zone, route53.upsert_record),
        *(secrets.read_number, secrets.set_number),
        *(notify.slack, notify.slack_update, notify.pagerduty),
        email.send,
        tickets.open,
        *(approvals.plan_escalation, approvals.verify),
        incidents.record,
        *(locks.request, locks.state, locks.holder_status),
        HandoffActivities(client, profile.task_queue, intake_key).start,
        WorkerModeActivities(profile.name, settings.read_only).mode,
    ]


def schedule_activities(
    client: Client, settings: Settings, http: httpx.AsyncClient, profile: EnvironmentProfile
) -> list[Any]:
    """The LLM spend watch: read spend and budget, start a runbook once."""
    spend = SpendActivities(
        redis.asyncio.Redis.from_url(settings.redis_url, socket_timeout=10),
        http,
        profile.api_base_url or settings.api_base_url,
        settings.llm_spend_key_prefix,
        settings.llm_daily_budget,
    )
    return [spend.read, AlarmActivities(AlarmStarter(client)).start_once]


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """The worker's deployment version, when it has one: runs start on the deployment's
    current version and stay pinned to it (a gate waiting for days finishes on the code it
    started with); a new version takes the new runs once it is made current."""
    name, build = settings.deployment_name, settings.build_id
    if name is None and build is None:
        return None
    if name is None or build is None:
        raise ValueError("RUNBOOK_DEPLOYMENT_NAME and RUNBOOK_BUILD_ID: set both, or neither")
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(deployment_name=name, build_id=build),
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.PINNED,
    )


# Activities one worker runs at once (the SDK's default), each with a thread if it needs one.
ACTIVITY_SLOTS = 100


def build_worker(client: Client, settings: Settings, http: httpx.AsyncClient) -> Worker:
    """The worker of one environment (RUNBOOK_ENV, else the first of the environments file)
    on that environment's task queue."""
    profile = settings.profile()
    return Worker(
        client,
        task_queue=profile.task_queue,
        workflows=EVERY_WORKFLOW,
        activities=[
            *build_activities(client, settings, http, profile),
            *schedule_activities(client, settings, http, profile),
        ],
        # As many threads as activity slots: a sync activity handed to this worker starts at
        # once. One queued behind busy threads would not heartbeat, and a mutation would be
        # retried elsewhere after its 10 s heartbeat timeout while it still waits to run here.
        max_concurrent_activities=ACTIVITY_SLOTS,
        activity_executor=ThreadPoolExecutor(max_workers=ACTIVITY_SLOTS),
        # Counting attempts adds no command; the decision guard is the activity side: a
        # mutation runs only with approvals given to its own run.
        interceptors=[
            *INTERCEPTORS,
            ActivityAttemptsInterceptor(),
            DecisionGuard(
                settings.roster_file,
                settings.approver_keys_file,
                settings.intake_key.get_secret_value() if settings.intake_key else None,
            ),
        ],
        workflow_runner=WORKFLOW_RUNNER,
        # Bad input (from the Temporal UI, say) fails the run with a message naming the
        # field, instead of retrying a workflow task that can never succeed.
        workflow_failure_exception_types=[pydantic.ValidationError],
        deployment_config=deployment_config(settings),
        # SIGTERM: stop polling, let running activities finish (a mutation included) for
        # this long, then cancel them; their runs go on with the next worker.
        graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_seconds),
    )


async def main() -> None:
    settings = get_settings()
    configure_logging(
        worker_secrets(settings), {p.workflow_type: p.name for p in PROCEDURES.values()}
    )
    try:
        settings.profile()
        deployment_config(settings)
    except (UnknownEnvironment, ValueError) as err:
        raise SystemExit(f"worker: {err}") from None
    migrate_incident_log(settings)
    client = await temporal_client(settings.metrics_address(), process_tracer("runbook-worker"))
    try:
        await check_namespace(client)
    except NamespaceNotReady as err:
        raise SystemExit(f"worker: {err}") from None
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with httpx.AsyncClient() as http, build_worker(client, settings, http):
        # The gates waiting, as gauges (kept referenced: an unreferenced task may be collected).
        gauges = settings.metrics_port and asyncio.create_task(watch_gates(client))  # noqa: F841
        profile = settings.profile()
        mode = " in shadow mode (RUNBOOK_READ_ONLY)" if settings.read_only else ""
        log.info("worker of %s polling task queue %s%s", profile.name, profile.task_queue, mode)
        await stop.wait()
        # Leaving the block shuts the worker down gracefully: running activities finish
        # or are cancelled, and Temporal hands the workflows to the next worker.


def run() -> None:
    """Leave through os._exit: the Temporal client's native threads can abort a normal
    interpreter shutdown (SIGABRT, exit -6 instead of the message and exit 1 of a refused
    start; temporalio/sdk-python issue 300)."""
    code: int = 0
    try:
        asyncio.run(main())
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
            code = 1
        else:
            code = stop.code or 0
    flush_traces()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
