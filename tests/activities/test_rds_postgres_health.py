"""The db-failover activities against real parts: the sandbox's moto, PostgreSQL, HTTP."""

import boto3
import httpx
import psycopg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws_access import AwsAccess
from activities.cloudwatch import CloudWatchActivities, MetricRequest
from activities.health import HealthActivities, HealthRequest, WaitHealthyRequest
from activities.notify import Link, Notification, NotifyActivities
from activities.postgres import (
    IdleInTransactionRequest,
    IdleInTransactionResult,
    PostgresActivities,
)
from activities.rds import (
    DbInstanceRequest,
    FailoverRequest,
    RdsActivities,
    WaitAvailableRequest,
)
from tests.temporal_env import run_activity, wait_until

DB = "prod-revenue-context-db"


@pytest.fixture
def sandbox(sandbox: httpx.Client) -> httpx.Client:
    sandbox.post("/control/heal-delay", json={"seconds": 1}).raise_for_status()
    return sandbox


@pytest.fixture
def rds(aws_env: dict[str, str]) -> RdsActivities:
    return RdsActivities(AwsAccess())


def test_describe_reports_status_multi_az_and_zones(
    sandbox: httpx.Client, rds: RdsActivities
) -> None:
    db = run_activity(rds.describe_instance, DbInstanceRequest(db_instance_id=DB))
    assert (db.status, db.multi_az, db.availability_zone) == ("available", True, "us-east-1a")


def test_unknown_instance_is_a_non_retryable_error(
    sandbox: httpx.Client, rds: RdsActivities
) -> None:
    with pytest.raises(ApplicationError) as err:
        run_activity(rds.describe_instance, DbInstanceRequest(db_instance_id="no-such-db"))
    assert err.value.non_retryable and "no-such-db" in str(err.value)


def test_failover_happens_once_however_often_it_is_asked(
    sandbox: httpx.Client, rds: RdsActivities
) -> None:
    ask = FailoverRequest(db_instance_id=DB, expected_primary_az="us-east-1a")
    first = run_activity(rds.force_failover, ask)
    assert first.rebooted and first.status == "rebooting"
    second = run_activity(rds.force_failover, ask)  # a retry while the instance reboots
    assert not second.rebooted and "already rebooting" in second.reason

    done = run_activity(
        rds.wait_available,
        WaitAvailableRequest(db_instance_id=DB, previous_primary_az="us-east-1a", poll_seconds=0.2),
    )
    assert done.status == "available" and done.availability_zone == "us-east-1b"
    assert done.polls > 1  # it really waited through `rebooting`

    third = run_activity(rds.force_failover, ask)  # a retry after the failover completed
    assert not third.rebooted and "already moved" in third.reason
    assert sandbox.get("/control/state").json()["failover_count"] == 1


def test_a_reboot_without_failover_is_waited_out_in_its_own_az(
    sandbox: httpx.Client, rds: RdsActivities
) -> None:
    """What db-failover's wait_only waits for when no failover is under way: `available`
    again, in the same AZ (a wait for another AZ would never end)."""
    boto3.client("rds").reboot_db_instance(DBInstanceIdentifier=DB)
    db = run_activity(rds.describe_instance, DbInstanceRequest(db_instance_id=DB))
    assert (db.status, db.availability_zone) == ("rebooting", "us-east-1a")
    done = run_activity(
        rds.wait_available, WaitAvailableRequest(db_instance_id=DB, poll_seconds=0.2)
    )
    assert (done.status, done.availability_zone) == ("available", "us-east-1a")
    assert done.polls > 1 and sandbox.get("/control/state").json()["failover_count"] == 0


def test_failover_of_a_single_az_instance_is_refused(
    sandbox: httpx.Client, rds: RdsActivities
) -> None:
    with pytest.raises(ApplicationError) as err:
        run_activity(
            rds.force_failover,
            FailoverRequest(db_instance_id="staging-revenue-context-db", expected_primary_az=None),
        )
    assert err.value.non_retryable and err.value.type == "NotMultiAZ"
    assert sandbox.get("/control/state").json()["reboot_count"] == 0


def test_metric_statistics_rise_with_the_incident(sandbox: httpx.Client, aws_env: dict) -> None:
    cw = CloudWatchActivities(boto3.client("cloudwatch"))
    ask = MetricRequest(
        metric_name="DatabaseConnections", dimensions={"DBInstanceIdentifier": DB}, minutes=10
    )
    before = run_activity(cw.metric_statistics, ask)
    sandbox.post("/control/incidents/db-failover").raise_for_status()
    during = run_activity(cw.metric_statistics, ask)
    assert before.datapoints and before.latest["Average"] < 100
    assert during.latest["Average"] > 400


async def test_health_check_sees_the_incident_and_the_recovery(
    sandbox: httpx.Client, sandbox_url: str
) -> None:
    async with httpx.AsyncClient() as http:
        health = HealthActivities(sandbox_url, http)
        env = ActivityEnvironment()
        ok = await env.run(health.check, HealthRequest(path="/health/detailed"))
        sandbox.post("/control/incidents/db-failover").raise_for_status()
        bad = await env.run(health.check, HealthRequest(path="/health/detailed"))
        sandbox.delete("/control/incidents/db-failover").raise_for_status()
        healed = await env.run(health.wait_healthy, WaitHealthyRequest(poll_seconds=0.1))
        down = await env.run(
            HealthActivities("http://127.0.0.1:9", http).check, HealthRequest(timeout_seconds=1)
        )
    assert ok.ok and ok.status_code == 200
    assert not bad.ok and bad.status_code == 503 and bad.body
    assert healed.ok
    assert not down.ok and down.status_code is None and "ConnectError" in (down.error or "")


def test_idle_in_transaction_counts_open_transactions(database_url: str) -> None:
    pg = PostgresActivities(database_url)

    def idle(count: int) -> IdleInTransactionResult | None:
        """The reading once the server's activity view shows `count` (a backend's state
        and its exit reach the view a moment after the client sees them)."""
        found = run_activity(pg.idle_in_transaction, IdleInTransactionRequest())
        return found if found.count == count else None

    before = run_activity(pg.idle_in_transaction, IdleInTransactionRequest()).count
    with psycopg.connect(database_url) as leak:
        leak.execute("SELECT 1")  # psycopg opens a transaction and leaves it open
        during = wait_until(lambda: idle(before + 1), "the open transaction to show")
    assert during.oldest_seconds is not None
    wait_until(lambda: idle(before), "the closed connection to leave")


async def test_slack_message_is_block_kit_with_links(
    sandbox: httpx.Client, sandbox_url: str
) -> None:
    note = Notification(kind="resolved", title="db-failover done", severity="P1", text="ok")
    async with httpx.AsyncClient() as http:
        notify = NotifyActivities(
            f"{sandbox_url}/slack/webhook",
            http,
            "http://ui.example",
            [Link(label="Grafana", url="https://grafana.example")],
        )
        result = await ActivityEnvironment().run(notify.slack, note)
        sandbox.post("/control/slack/fail", json={"status": 500}).raise_for_status()
        with pytest.raises(ApplicationError) as failed:
            await ActivityEnvironment().run(notify.slack, note)
        unconfigured = await ActivityEnvironment().run(
            NotifyActivities(None, http, "http://ui.example", []).slack, note
        )
    assert result.delivered
    [message] = sandbox.get("/slack/messages").json()
    assert message["blocks"][0]["type"] == "header" and "db-failover done" in message["text"]
    buttons = [
        e["text"]["text"]
        for b in message["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
    ]
    assert buttons == ["Temporal run", "Grafana"]
    assert not failed.value.non_retryable and "500" in str(failed.value)
    assert sandbox_url not in str(failed.value)  # the webhook URL is a secret
    assert not unconfigured.delivered
