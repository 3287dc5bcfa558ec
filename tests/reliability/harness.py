"""Real processes for the reliability tests: a Temporal dev server that can be killed and
restarted on its own database file, workers as separate processes (`crashing_worker`),
the CLI, and moto's request recorder to count what reached AWS."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from settings import PROJECT_DIR
from tests.temporal_env import venv_binary
from workflows.search_attributes import DEV_SERVER_ARGS

HOST = "127.0.0.1"
# A workflow task left by a killed worker is handed to the next one after this long.
WORKFLOW_TASK_TIMEOUT = "2s"
KILLED = -signal.SIGKILL  # the exit status of a process that died by SIGKILL


class DevServer:
    """`temporal server start-dev` on a database file: a kill and a start keep every run."""

    def __init__(self, state_dir: Path, port: int) -> None:
        self.state_dir = state_dir
        self.port = port
        self.address = f"{HOST}:{port}"
        self.log = state_dir / "logs" / "temporal.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        argv = [venv_binary("temporal"), "server", "start-dev", "--ip", HOST]
        argv += ["--port", str(self.port), "--headless", "--log-level", "warn"]
        argv += ["--db-filename", str(self.state_dir / "temporal.db")]
        task_timeout = f'history.defaultWorkflowTaskTimeout="{WORKFLOW_TASK_TIMEOUT}"'
        argv += ["--dynamic-config-value", task_timeout]
        for attribute in DEV_SERVER_ARGS:
            argv += ["--search-attribute", attribute]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not _connects(self.address):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"temporal dev server did not start; see {self.log}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=30)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    async def client(self) -> Client:
        return await Client.connect(self.address, data_converter=pydantic_data_converter)


def _connects(address: str) -> bool:
    """In a thread of its own: the caller may be inside an event loop."""

    async def probe() -> None:
        client = await asyncio.wait_for(Client.connect(address), timeout=2)
        # A restarted server answers before it knows its namespace again (a start then
        # fails with NamespaceNotFound): wait for a call that needs the namespace.
        await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(namespace="default", task_queue=TaskQueue(name="probe")),
            timeout=timedelta(seconds=2),
        )

    with ThreadPoolExecutor(max_workers=1) as one:
        try:
            one.submit(asyncio.run, probe()).result()
        except Exception:
            return False
    return True


@dataclass
class WorkerProcess:
    """`python -m tests.reliability.crashing_worker`: spawned at once, polling after `go()`."""

    env: dict[str, str]
    log: Path
    crash: str | None = None
    proc: subprocess.Popen[bytes] = field(init=False)
    go_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.go_file = self.log.with_suffix(".go")
        env = {**self.env, "RUNBOOK_WORKER_GO": str(self.go_file), "PYTHONUNBUFFERED": "1"}
        if self.crash:
            env["RUNBOOK_CRASH"] = self.crash
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.reliability.crashing_worker"],
                cwd=PROJECT_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def go(self) -> WorkerProcess:
        self.go_file.touch()
        return self

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    async def exited(self, timeout: float) -> int:
        """The exit status once the process is gone (-9: it died by SIGKILL)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"worker (crash at {self.crash}) still alive after {timeout:.0f}s: the "
                    f"crash point was never reached\n{self.tail()}"
                )
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.alive and not self.go_file.exists():
            self.kill()  # spawned ahead, never polled: nothing to shut down gracefully
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 25) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class AwsCall:
    action: str
    params: dict[str, Any]
    access_key: str


class MotoRecorder:
    """moto's own request log (`/moto-api/recorder/`): what reached AWS, by whom."""

    def __init__(self, endpoint: str) -> None:
        self._http = httpx.Client(base_url=endpoint, timeout=10)

    def restart(self) -> None:
        self._http.post("/moto-api/recorder/reset-recording").raise_for_status()
        self._http.post("/moto-api/recorder/start-recording").raise_for_status()

    def stop(self) -> None:
        self._http.post("/moto-api/recorder/stop-recording")

    def calls(self, access_key: str | None = None) -> list[AwsCall]:
        text = self._http.get("/moto-api/recorder/download-recording").text
        found = [parse_call(json.loads(line)) for line in text.splitlines() if line.strip()]
        return [c for c in found if access_key is None or c.access_key == access_key]

    def count(self, action: str, access_key: str, **params: str) -> int:
        return sum(
            1
            for call in self.calls(access_key)
            if call.action == action
            and all(str(call.params.get(k)) == v for k, v in params.items())
        )


def parse_call(entry: dict[str, Any]) -> AwsCall:
    body = entry.get("body") or ""
    raw = base64.b64decode(body) if entry.get("body_encoded") else body.encode()
    if raw[:2] == b"\x1f\x8b":  # botocore gzips large bodies (CloudWatch metric data)
        raw = gzip.decompress(raw)
    headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
    target = headers.get("x-amz-target", "")
    credential = headers.get("authorization", "").partition("Credential=")[2]
    access_key = credential.split("/", 1)[0]
    if target:  # JSON protocols (ECS, Secrets Manager, ...)
        try:
            params = json.loads(raw or b"{}")
        except ValueError:  # CBOR and other binary protocols: the action is enough
            params = {}
        return AwsCall(target.rpartition(".")[2], params, access_key)
    path = urlsplit(entry.get("url") or "").path
    if "/operation/" in path:  # Smithy RPC v2 (CBOR): the operation is in the path
        return AwsCall(path.rpartition("/operation/")[2], {}, access_key)
    if path.rstrip("/").endswith("/rrset") and entry.get("method") == "POST":  # Route 53
        return AwsCall("ChangeResourceRecordSets", {"path": path}, access_key)
    form = {k: v[0] for k, v in parse_qs(raw.decode(errors="replace")).items()}
    return AwsCall(form.pop("Action", ""), form, access_key)


@dataclass
class Transcript:
    """Every CLI command run and its output, for the secret scan."""

    path: Path

    def add(self, args: Iterable[str], result: subprocess.CompletedProcess[str]) -> None:
        with self.path.open("a") as out:
            out.write(f"$ runbook {' '.join(args)}  -> {result.returncode}\n")
            out.write(result.stdout + result.stderr + "\n")


async def run_cli(
    env: dict[str, str], transcript: Transcript, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, off the event loop."""
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    transcript.add(args, result)
    return result


def terminate_all(workers: Iterable[WorkerProcess]) -> None:
    for worker in workers:
        worker.stop()
