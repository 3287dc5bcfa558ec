"""The reliability suite's own stack: PostgreSQL, Valkey, Kafka, the sandbox with moto, and a
Temporal dev server on a database file, all on free ports. Its own, because these tests
kill, stop and restart servers, and count every request that reaches AWS.

Secrets are planted where the code under test must keep them: the approvers' keys (the
stack's roster), a Slack webhook URL with a secret token, a PagerDuty routing key. The
secret scan (test_secrets_scan.py) looks for them in every log and history afterwards.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

from activities.approvals import load_table
from client.decisions import signed_start
from stack.local import Stack
from stack.roster import local_roster_files, local_slack_app, moto_recording_file
from tests.conftest import embedded_environ, free_ports, state_dir
from tests.reliability.harness import DevServer, MotoRecorder, Transcript, WorkerProcess
from workflows.models import RunbookResult
from workflows.registry import PROCEDURES

PARTS = ("postgres", "redis", "kafka", "sandbox", "aws")
# The workers' own AWS access key id: moto's recorder tells their calls from the sandbox's.
WORKER_ACCESS_KEY = "AKIARUNBOOKWORKER"


@dataclass
class Reliability:
    stack: Stack
    temporal: DevServer
    state: Path
    slack_token: str
    routing_key: str
    transcript: Transcript
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def sandbox_url(self) -> str:
        return self.stack.client_env()["SANDBOX_URL"]

    @property
    def aws_url(self) -> str:
        return self.stack.client_env()["AWS_ENDPOINT_URL"]

    def recorder(self) -> MotoRecorder:
        return MotoRecorder(self.aws_url)

    def aws(self, service: str) -> Any:
        """A boto3 client on this stack's moto, as the test (not a worker) calls it."""
        return boto3.client(
            service,
            endpoint_url=self.aws_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def approver_keys(self) -> dict[str, str]:
        return load_table(local_roster_files(self.state)[1], "keys")

    def secrets(self) -> dict[str, str]:
        """Every planted secret value, by a name for the report."""
        planted = {f"approver key of {n}": k for n, k in self.approver_keys().items()}
        planted["Slack webhook token"] = self.slack_token
        planted["PagerDuty routing key"] = self.routing_key
        slack_app = local_slack_app(self.state)  # the stack's Slack app (intake and worker)
        planted["Slack signing secret"] = slack_app["SLACK_SIGNING_SECRET"]
        planted["Slack bot token"] = slack_app["SLACK_BOT_TOKEN"]
        return planted

    def env(self, task_queue: str, **extra: str) -> dict[str, str]:
        """What a worker or the CLI gets: the stack's addresses and the planted secrets."""
        return {
            **embedded_environ(),
            **self.stack.client_env(),
            "TEMPORAL_ADDRESS": self.temporal.address,
            "RUNBOOK_TASK_QUEUE": task_queue,
            "PAGERDUTY_ROUTING_KEY": self.routing_key,
            "AWS_ACCESS_KEY_ID": WORKER_ACCESS_KEY,
            **extra,
        }

    def cli_env(self, task_queue: str, approver: str | None = None) -> dict[str, str]:
        env = self.env(task_queue)
        for secret in ("PAGERDUTY_ROUTING_KEY", "SLACK_WEBHOOK_URL"):  # the CLI needs neither
            env.pop(secret, None)
        if approver:
            env["RUNBOOK_APPROVER_KEY"] = self.approver_keys()[approver]
        return env

    async def start(
        self, task_queue: str, procedure: str, signed_by: str | None = "alice", **fields: Any
    ) -> WorkflowHandle[Any, RunbookResult]:
        """Start a procedure as `runbook start` does: under the id that names its resource (a
        run another test left there is ended), requested by alice and signed with the key of
        `signed_by` (None: unsigned, so the requester is unproven)."""
        proc = PROCEDURES[procedure]
        inp = proc.input_model.model_validate({"requested_by": "alice", **fields})
        if signed_by:
            inp = signed_start(proc, inp, self.approver_keys()[signed_by])
        client = await self.temporal.client()
        return await client.start_workflow(
            proc.workflow_type,
            inp,
            id=proc.workflow_id(inp),
            task_queue=task_queue,
            result_type=RunbookResult,
            id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
        )

    def worker(self, task_queue: str, crash: str | None = None, **extra: str) -> WorkerProcess:
        """A worker process, spawned now; it polls once `.go()` is called."""
        number = len(self.workers) + 1
        log = self.state / "logs" / f"worker-{number:03d}.log"
        spawned = WorkerProcess(self.env(task_queue, **extra), log, crash)
        self.workers.append(spawned)
        return spawned


@pytest.fixture(scope="package")
def reliability() -> Iterator[Reliability]:
    path = state_dir("runbook-reliability-")
    ports = free_ports()
    slack_token = f"slack-{secrets.token_hex(16)}"
    environ = {
        **embedded_environ(),
        # Kept private: the recording holds secret values (stack/roster.py).
        "MOTO_RECORDER_FILEPATH": str(moto_recording_file(path)),
        "SLACK_WEBHOOK_URL": f"http://127.0.0.1:{ports['sandbox']}/slack/webhook?token={slack_token}",
    }
    stack = Stack(path, ports=ports, environ=environ)
    temporal = DevServer(path, ports["temporal"])
    rel = Reliability(
        stack=stack,
        temporal=temporal,
        state=path,
        slack_token=slack_token,
        routing_key=f"pd-{secrets.token_hex(16)}",
        transcript=Transcript(path / "logs" / "cli-transcript.log"),
    )
    try:
        stack.up(PARTS)
        temporal.start()
        yield rel
    finally:
        for spawned in rel.workers:
            spawned.stop()
        temporal.stop()
        stack.down()
        shutil.rmtree(path, ignore_errors=True)


def queue_name(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"
