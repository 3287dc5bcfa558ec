"""Real servers for the tests: one embedded stack (PostgreSQL, Valkey, Kafka, sandbox + moto)
for the session, on free ports in a fresh state dir. Workflow tests use the SDK's
WorkflowEnvironment (tests/temporal_env.py), not the stack's Temporal."""

import os
import random
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stack.local import DEFAULT_PORTS, EXTERNAL_VARS, Stack

pytest_plugins = ["tests.temporal_env"]

SESSION_PARTS = ("postgres", "redis", "kafka", "sandbox", "aws")
AWS_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


def free_ports(names: tuple[str, ...] = tuple(DEFAULT_PORTS)) -> dict[str, int]:
    """Distinct free ports below the kernel's ephemeral range: a port handed out by bind(0)
    can be taken by an outgoing connection (Temporal opens many) before the server binds it."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError):
        ephemeral = 32768
    chosen: dict[str, int] = {}
    while len(chosen) < len(names):
        port = random.randrange(10000, ephemeral)
        if port not in chosen.values() and bindable(port):
            chosen[names[len(chosen)]] = port
    return chosen


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def embedded_environ() -> dict[str, str]:
    """os.environ without the addresses that would make a part external."""
    drop = {*EXTERNAL_VARS.values(), "TEMPORAL_UI_URL", "SANDBOX_URL", "RUNBOOK_DATABASE_URL"}
    drop |= {k for k in os.environ if k.startswith("RUNBOOK_PORT_")}
    return {k: v for k, v in os.environ.items() if k not in drop}


def state_dir(prefix: str) -> Path:
    """A fresh state dir that PostgreSQL's unprivileged user can reach (pytest's tmp_path is
    0700 under a 0700 parent)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    path = state_dir("runbook-test-stack-")
    session_stack = Stack(path, ports=free_ports(), environ=embedded_environ())
    try:
        session_stack.up(SESSION_PARTS)
        yield session_stack
    finally:
        session_stack.down()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def stack_env(stack: Stack) -> dict[str, str]:
    return stack.client_env()


@pytest.fixture(scope="session")
def aws_env(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """AWS_* in os.environ for the session (boto3 reads them), restored afterwards."""
    values = {k: stack_env[k] for k in AWS_VARS}
    saved = {k: os.environ.get(k) for k in (*AWS_VARS, "AWS_PROFILE", "AWS_SESSION_TOKEN")}
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):  # never mix real credentials in
        os.environ.pop(key, None)
    os.environ.update(values)
    yield values
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def database_url(stack_env: dict[str, str]) -> str:
    return stack_env["DATABASE_URL"]


@pytest.fixture
def redis_url(stack_env: dict[str, str]) -> str:
    return stack_env["REDIS_URL"]


@pytest.fixture
def kafka_bootstrap(stack_env: dict[str, str]) -> str:
    return stack_env["KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture
def aws_endpoint(stack_env: dict[str, str]) -> str:
    return stack_env["AWS_ENDPOINT_URL"]


@pytest.fixture
def sandbox_url(stack_env: dict[str, str]) -> str:
    return stack_env["SANDBOX_URL"]


@pytest.fixture
def sandbox(sandbox_url: str) -> Iterator[httpx.Client]:
    """The session's sandbox, reset before and after the test. A module that needs more
    (fast ECS tasks, a short heal delay) overrides this fixture and asks for it."""
    with httpx.Client(base_url=sandbox_url, timeout=30) as client:
        client.post("/control/reset").raise_for_status()
        yield client
        client.post("/control/reset")
