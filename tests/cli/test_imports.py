"""The run commands (`runbook start | approve | reject | sign | status | pending`) load none of
the client libraries that only the worker's activities call, and only `start` loads every
procedure's workflow module: they would be most of the commands' start-up
(bench/cold_start.py, bench/to_gate.py measure it)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER_ONLY = (
    "boto3",
    "botocore",
    "httpx",
    "psycopg",
    "redis",
    "confluent_kafka.admin",
    "prometheus_client",
    "opentelemetry",  # traces: loaded only when configured (telemetry.py)
)
REGISTRY = "workflows.registry"


def run_cli(argv: list[str], tmp_path: Path) -> tuple[int, list[str]]:
    """`runbook ARGV` in a fresh interpreter: its exit status and which of WORKER_ONLY and
    REGISTRY it loaded."""
    watched = (*WORKER_ONLY, REGISTRY)
    # Left through os._exit, as the console script does: the Temporal client's native
    # threads can abort a normal interpreter shutdown.
    code = (
        "import os, sys\n"
        "from cli.main import main\n"
        f"status = main({argv!r})\n"
        f"print(status, *sorted(m for m in {watched!r} if m in sys.modules), flush=True)\n"
        "os._exit(0)\n"
    )
    env = os.environ | {"RUNBOOK_STATE_DIR": str(tmp_path), "TEMPORAL_ADDRESS": "127.0.0.1:9"}
    env.pop("RUNBOOK_APPROVER_KEY", None)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    status, *loaded = done.stdout.split()
    return int(status), loaded


def test_start_loads_the_registry_and_no_worker_library(tmp_path: Path) -> None:
    # bad input: refused after the whole command is loaded, before anything is contacted
    argv = ["start", "api-errors", "--set", "error_window_seconds=-1"]
    assert run_cli(argv, tmp_path) == (2, [REGISTRY])


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["approve", "kafka-lag/context_engine_group", "--as", "alice"], 2),  # no key given
        # Temporal unreachable: the client path up to the connection
        (["status", "db-failover/prod-revenue-context-db"], 1),
        (["pending"], 1),
    ],
)
def test_other_run_commands_load_neither(argv: list[str], status: int, tmp_path: Path) -> None:
    assert run_cli(argv, tmp_path) == (status, [])
