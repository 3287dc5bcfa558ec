"""Real servers for the tests: one embedded stack (PostgreSQL, Valkey, Kafka, sandbox + moto)
for the session, on free ports in a fresh state dir; the alarm webhook in the test's event
loop. Workflow tests use the SDK's WorkflowEnvironment (tests/temporal_env.py), not the
stack's Temporal."""

import asyncio
import os
import random
import shutil
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import uvicorn
from temporalio.client import Client

from intake.app import WebhookConfig, create_app
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules that need no shared stack run first, the reliability suite (a stack of its
    own, package-scoped) next, the users of the session's stack last. An idle stack costs
    about half a core here (the sandbox's simulated traffic and the broker serving it), so
    each stack runs only beside its own tests. Modules stay whole, in their order."""

    def rank(item: pytest.Item) -> int:
        names = getattr(item, "fixturenames", ())
        return 2 if "stack" in names else 1 if "reliability" in names else 0

    by_module: dict[str, int] = {}
    for item in items:
        module = item.nodeid.partition("::")[0]
        by_module[module] = max(by_module.get(module, 0), rank(item))
    items.sort(key=lambda item: by_module[item.nodeid.partition("::")[0]])


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


@asynccontextmanager
async def serving_webhook(config: WebhookConfig, client: Client) -> AsyncIterator[str]:
    """The alarm webhook (intake.app) over real HTTP, by uvicorn in this event loop (so the
    test can patch what it sees); yields its base URL."""
    port = free_ports(("webhook",))["webhook"]
    # Keep-alive longer than any pause in a test: a client must not reuse a connection the
    # server has just closed.
    options = {"host": "127.0.0.1", "port": port, "log_level": "error", "timeout_keep_alive": 75}
    server = uvicorn.Server(uvicorn.Config(create_app(config, client), **options))  # type: ignore[arg-type]
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the webhook did not start"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@contextmanager
def serving_http(answer: Callable[[str], tuple[int, bytes]]) -> Iterator[str]:
    """A small HTTP server in a thread for what a test stands in for: each GET's path goes
    to `answer`, which gives the status and body. Yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = answer(self.path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
