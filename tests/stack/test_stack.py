"""The embedded stack with real processes, each test stack on its own free ports."""

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from confluent_kafka.admin import AdminClient
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

import stack.servers
from stack.local import PARTS, Stack, StackError
from tests.conftest import embedded_environ, free_ports, state_dir
from workflows import search_attributes


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def new_stack(environ: dict[str, str] | None = None) -> Stack:
    return Stack(
        state_dir("runbook-test-"), ports=free_ports(), environ=environ or embedded_environ()
    )


MakeStack = Callable[..., Stack]


@pytest.fixture
def make_stack() -> Iterator[MakeStack]:
    """Small stacks for one test (free ports, fresh state dir), always stopped and removed."""
    made: list[Stack] = []

    def make(environ: dict[str, str] | None = None) -> Stack:
        made.append(new_stack(environ))
        return made[-1]

    yield make
    with ThreadPoolExecutor() as pool:  # each waits for its processes to leave
        list(pool.map(Stack.down, reversed(made)))
    for one in made:
        shutil.rmtree(one.state_dir, ignore_errors=True)


# ----- the whole stack, started once for this module --------------------------------------


@pytest.fixture(scope="module")
def full() -> Iterator[Stack]:
    """How long `up` takes is measured by bench/cold_start.py, not here."""
    whole = new_stack()
    try:
        whole.up(timeout=120)
        yield whole
    finally:
        whole.down()
        shutil.rmtree(whole.state_dir, ignore_errors=True)


def test_up_brings_every_part_up(full: Stack) -> None:
    status = full.status()
    assert set(status) == set(PARTS)
    for part in status.values():
        assert part.up, part
        assert part.managed == "embedded"
        assert part.pid is not None
    assert status["sandbox"].pid == status["aws"].pid
    assert status["temporal"].pid == status["temporal-ui"].pid
    for name in ("postgres", "redis", "kafka", "sandbox", "aws", "temporal", "temporal-ui"):
        assert f"127.0.0.1:{full.port(name)}" in status[name].address


def test_every_part_answers_its_clients(full: Stack) -> None:
    env = full.client_env()
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()
    with psycopg.connect(env["RUNBOOK_DATABASE_URL"]) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("runbook",)
    assert redis.Redis.from_url(env["REDIS_URL"]).ping()
    admin = AdminClient({"bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"]})
    assert admin.list_topics(timeout=5).brokers
    assert httpx.get(f"{env['SANDBOX_URL']}/health").status_code < 500
    assert httpx.get(f"{env['AWS_ENDPOINT_URL']}/moto-api/").status_code == 200
    assert httpx.get(env["TEMPORAL_UI_URL"]).status_code == 200


def test_status_names_the_metrics_endpoints_and_they_serve(full: Stack) -> None:
    status = full.status()
    worker, webhook = status["worker-metrics"], status["webhook-metrics"]
    assert worker.up and worker.address == f"http://127.0.0.1:{full.port('worker-metrics')}/metrics"
    assert webhook.up and webhook.address == f"{status['webhook'].address}/metrics"
    assert worker.pid == status["worker"].pid and webhook.pid == status["webhook"].pid
    assert "temporal_num_pollers{" in httpx.get(worker.address).text  # the worker polls
    httpx.get(f"{status['webhook'].address}/health").raise_for_status()
    assert 'route="/health"' in httpx.get(webhook.address).text


async def test_dev_server_has_the_search_attributes(full: Stack) -> None:
    client = await Client.connect(full.client_env()["TEMPORAL_ADDRESS"])
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    assert {key.name for key in search_attributes.ALL} <= set(listed.custom_attributes)


def test_second_up_starts_nothing(full: Stack) -> None:
    before = {name: part.pid for name, part in full.status().items()}
    full.up()
    assert {name: part.pid for name, part in full.status().items()} == before


def test_env_file_can_be_sourced(full: Stack) -> None:
    env_file = full.write_env_file()
    shown = subprocess.run(
        ["bash", "-c", f"source {env_file} && echo $DATABASE_URL $TEMPORAL_ADDRESS"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    ).stdout.split()
    assert shown == [full.client_env()["DATABASE_URL"], full.client_env()["TEMPORAL_ADDRESS"]]


def test_secrets_bearing_files_are_the_owners_alone(full: Stack) -> None:
    """moto's request recording holds secret values (PutSecretValue bodies); the intake key
    signs alarm starts: neither is readable by others, and the key is in no client's env."""
    recording = Path(full.child_env()["MOTO_RECORDER_FILEPATH"])
    assert recording.exists() and recording.stat().st_mode & 0o777 == 0o600
    assert recording.parent.stat().st_mode & 0o777 == 0o700
    assert (full.state_dir / "intake.key").stat().st_mode & 0o777 == 0o600
    assert "RUNBOOK_INTAKE_KEY" not in full.client_env()
    # The local Slack app's secrets: the env file (0600) carries them for acting as Slack.
    for name in ("slack-signing-secret", "slack-bot-token"):
        assert (full.state_dir / name).stat().st_mode & 0o777 == 0o600
    assert full.client_env()["SLACK_API_URL"] == f"{full.client_env()['SANDBOX_URL']}/slack/api/"


def test_down_leaves_no_process_behind(full: Stack) -> None:
    pids = {part.pid for part in full.status().values()}
    full.down()
    assert not [pid for pid in pids if pid is not None and pid_alive(pid)]
    assert not list((full.state_dir / "pids").iterdir())
    assert not any(part.up or part.pid for part in full.status().values())
    full.down()  # a second down is harmless


# ----- pid files ---------------------------------------------------------------------------


def test_killed_process_is_restarted(make_stack: MakeStack) -> None:
    small = make_stack()
    small.up(["redis"])
    first = small.status()["redis"].pid
    assert first is not None
    os.kill(first, 9)
    while pid_alive(first):
        time.sleep(0.05)
    assert small.status()["redis"].pid is None
    small.up(["redis"])
    after = small.status()["redis"]
    assert after.up and after.pid not in (None, first)


def test_stale_pid_files_are_not_taken_for_ours(make_stack: MakeStack) -> None:
    small = make_stack()
    small.up(["redis"])
    pid_file = small.state_dir / "pids" / "redis.pid"
    meta = json.loads(pid_file.read_text().splitlines()[1])
    small.down()
    dead = subprocess.Popen(["true"])
    dead.wait()
    # A dead pid; a live unrelated pid (this test) named like ours; a bare pid.
    for content in (
        f"{dead.pid}\n{json.dumps(meta)}\n",
        f"{os.getpid()}\n{json.dumps(meta)}\n",
        f"{os.getpid()}\n",
    ):
        pid_file.write_text(content)
        assert small.status()["redis"].pid is None
        small.up(["redis"])
        status = small.status()["redis"]
        assert status.up and status.pid not in (None, os.getpid(), dead.pid)
        small.down()  # and this test is still alive


def test_a_part_that_dies_at_start_shows_its_log(make_stack: MakeStack) -> None:
    small = make_stack()
    small.state_dir.joinpath("kafka").write_text("not a directory")
    with pytest.raises(StackError, match=r"kafka: exited while starting[\s\S]*File exists"):
        small.up(["kafka"], timeout=20)
    assert small.status()["kafka"].pid is None


def test_a_busy_port_is_named(make_stack: MakeStack) -> None:
    small = make_stack()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", small.port("redis")))
        busy.listen()
        with pytest.raises(StackError, match=r"redis: port .* in use .*RUNBOOK_PORT_REDIS"):
            small.up(["redis"])


def test_missing_worker_script_is_an_error(
    make_stack: MakeStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(stack.servers, "PROJECT_DIR", tmp_path)
    external = {
        "DATABASE_URL": "postgresql://db.invalid/x",
        "REDIS_URL": "redis://redis.invalid",
        "KAFKA_BOOTSTRAP_SERVERS": "kafka.invalid:9092",
        "API_BASE_URL": "http://api.invalid",
        "AWS_ENDPOINT_URL": "http://aws.invalid",
        "TEMPORAL_ADDRESS": "temporal.invalid:7233",
    }
    small = make_stack({**embedded_environ(), **external})
    with pytest.raises(StackError, match=r"worker: .*worker\.py is missing"):
        small.up(["worker"])


# ----- external parts ----------------------------------------------------------------------


def test_configured_address_is_used_not_started(make_stack: MakeStack) -> None:
    servers = make_stack()
    servers.up(["postgres", "redis", "kafka", "aws"])
    running = servers.client_env()
    configured = {k: running[k] for k in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    configured |= {"AWS_ENDPOINT_URL": running["AWS_ENDPOINT_URL"], "AWS_REGION": "us-east-1"}
    small = make_stack({**embedded_environ(), **configured})
    small.up(["sandbox"])  # what it needs is configured: only the sandbox starts
    assert [p.name for p in (small.state_dir / "pids").iterdir()] == ["sandbox.pid"]
    status = small.status()
    for part in ("postgres", "redis", "kafka", "aws"):
        assert status[part].managed == "external"
        assert status[part].up and status[part].pid is None
    assert status["sandbox"].managed == "embedded" and status["sandbox"].up
    cmdline = Path(f"/proc/{status['sandbox'].pid}/cmdline").read_bytes().split(b"\0")
    assert b"--moto-port" not in cmdline  # AWS is the configured one
    env = small.client_env()
    assert {k: env[k] for k in configured} == configured
    assert "AWS_ACCESS_KEY_ID" not in env and env["AWS_DEFAULT_REGION"] == "us-east-1"


def test_external_temporal_is_shown_as_external(tmp_path: Path) -> None:
    small = Stack(tmp_path, environ={**embedded_environ(), "TEMPORAL_ADDRESS": "127.0.0.1:1"})
    status = small.status()
    assert status["temporal"].managed == status["temporal-ui"].managed == "external"
    assert status["temporal"].address == "127.0.0.1:1" and not status["temporal"].up
    assert small.client_env()["TEMPORAL_ADDRESS"] == "127.0.0.1:1"


def test_own_address_in_the_environment_is_not_external(tmp_path: Path) -> None:
    ports = free_ports()
    first = Stack(tmp_path, ports=ports, environ=embedded_environ())
    # As after `source .runbook/env`: the stack's own addresses are not external ones.
    again = Stack(tmp_path, ports=ports, environ={**embedded_environ(), **first.client_env()})
    assert {p.managed for p in again.status().values()} == {"embedded"}


def test_ports_from_the_environment(tmp_path: Path) -> None:
    small = Stack(tmp_path, environ={**embedded_environ(), "RUNBOOK_PORT_TEMPORAL_UI": "18999"})
    assert small.client_env()["TEMPORAL_UI_URL"] == "http://127.0.0.1:18999"
    assert small.client_env()["TEMPORAL_ADDRESS"] == "127.0.0.1:7233"  # the default
