"""The worker: every workflow and activity on one task queue, clients built once."""

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import httpx
from botocore.config import Config
from temporalio.client import Client
from temporalio.worker import Worker

from activities.cloudwatch import CloudWatchActivities
from activities.health import HealthActivities
from activities.notify import Link, NotifyActivities
from activities.postgres import PostgresActivities
from activities.rds import RdsActivities
from settings import Settings, get_settings, temporal_client
from workflows.registry import WORKFLOWS

log = logging.getLogger("runbook.worker")

# Standard retry mode backs off on throttling; timeouts keep a hung endpoint from pinning a
# thread for longer than the activity's own timeout.
AWS_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5, read_timeout=20
)


def build_activities(settings: Settings, http: httpx.AsyncClient) -> list[Any]:
    session = boto3.session.Session()
    rds = RdsActivities(session.client("rds", config=AWS_CONFIG))
    cloudwatch = CloudWatchActivities(session.client("cloudwatch", config=AWS_CONFIG))
    health = HealthActivities(settings.api_base_url, http)
    postgres = PostgresActivities(settings.database_url)
    notify = NotifyActivities(
        settings.slack_webhook_url,
        http,
        settings.temporal_ui_url,
        [
            Link(label="CloudWatch", url=settings.cloudwatch_dashboard_url),
            Link(label="Grafana", url=settings.grafana_url),
        ],
    )
    return [
        rds.describe_instance,
        rds.force_failover,
        rds.wait_available,
        cloudwatch.metric_statistics,
        health.check,
        health.wait_healthy,
        postgres.idle_in_transaction,
        notify.slack,
    ]


def build_worker(client: Client, settings: Settings, http: httpx.AsyncClient) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        activities=build_activities(settings, http),
        activity_executor=ThreadPoolExecutor(max_workers=50),
    )


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    client = await temporal_client()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with httpx.AsyncClient() as http, build_worker(client, settings, http):
        log.info("worker polling task queue %s", settings.task_queue)
        await stop.wait()
        # Leaving the block shuts the worker down gracefully: running activities finish
        # or are cancelled, and Temporal hands the workflows to the next worker.


if __name__ == "__main__":
    asyncio.run(main())
