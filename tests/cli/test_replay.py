"""`runbook replay` on the dev server: runs recorded on a queue of the test's own (one
finished, one still waiting at its gate) replay under this code, and fail against a
deliberately incompatible DatabaseFailover (a test-local class with the same name)."""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner

from cli.replay import cmd_replay, replay_namespace, visibility_query
from tests.fakes.approvers import write_roster
from tests.fakes.incompatible import IncompatibleFailover
from tests.fakes.systems import FakeSystems
from tests.temporal_env import eventually, gate_open, running, start, until
from workflows.db_failover import DatabaseFailover, DbFailoverInput
from workflows.replay import EVERY_WORKFLOW

pytestmark = pytest.mark.timeout(180)


def replay_args(queue: str, **more: object) -> argparse.Namespace:
    fields = {"since": "1h", "workflow_type": None, "task_queue": queue, "limit": 100}
    return argparse.Namespace(**(fields | {"json": True} | more))


async def test_recorded_runs_replay_and_an_incompatible_release_fails(
    dev_env: WorkflowEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fakes = FakeSystems(write_roster(tmp_path))
    queue = f"replay-{uuid.uuid4()}"
    runner = {"workflow_runner": UnsandboxedWorkflowRunner()}
    async with running(dev_env, [DatabaseFailover], fakes.activities(), queue=queue, **runner):
        done = await start(dev_env, queue, DbFailoverInput(dry_run=True, db_instance_id=queue))
        await done.result()
        waiting = await start(dev_env, queue, DbFailoverInput(db_instance_id=f"{queue}-open"))
        await until(waiting, gate_open)

    try:
        query = visibility_query(
            (await done.describe()).start_time, ["DatabaseFailover"], task_queue=queue
        )

        async def both_listed() -> bool:
            return (await replay_namespace(dev_env.client, query, 100)).replayed == 2

        await eventually(both_listed, "visibility to list both runs", 60, 0.5)

        env = {"TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host}
        passed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "cli.main", "replay", "--since", "1h", "--task-queue", queue],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert passed.returncode == 0, passed.stdout + passed.stderr
        assert "2 histories replayed" in passed.stdout and ", 0 failed" in passed.stdout

        others = [w for w in EVERY_WORKFLOW if w is not DatabaseFailover]
        code = await cmd_replay(dev_env.client, replay_args(queue), [*others, IncompatibleFailover])
        report = json.loads(capsys.readouterr().out)
        assert code == 1 and report["replayed"] == 2
        assert {f["workflow_id"] for f in report["failed"]} == {done.id, waiting.id}
        assert all("Nondeterminism" in f["error"] for f in report["failed"])
    finally:
        await waiting.terminate("test over")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "7w"], "--since '7w': a number and m, h or d"),
        (["--since", "91d"], "at most 90d"),
        (["--workflow-type", "Nope"], "--workflow-type Nope: unknown; allowed: ApiErrorRateSpike"),
        (["--task-queue", 'q" OR 1=1'], "--task-queue: letters, digits"),
    ],
)
def test_bad_input_is_refused_before_temporal_is_contacted(
    argv: list[str], message: str, tmp_path: Path
) -> None:
    env = {"TEMPORAL_ADDRESS": "127.0.0.1:9", "RUNBOOK_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "replay", *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr
