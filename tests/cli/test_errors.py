"""What the `runbook` command says when the stack is not there or the reader goes away: a
sentence that says what to do, the README's exit status, never a traceback."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_ports

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = str(ROOT / ".venv" / "bin" / "runbook")
DB = "db-failover/production/prod-revenue-context-db"


def runbook(command: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "RUNBOOK_STATE_DIR": str(tmp_path),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_ports(('temporal',))['temporal']}",  # nobody there
    }
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "command",
    [
        f"status {DB}",
        "pending",
        f"approve {DB} --as bob --comment go",
        "start db-failover --dry-run",
    ],
)
def test_a_stack_that_is_not_up_says_run_stack_up(command: str, tmp_path: Path) -> None:
    done = runbook(f"RUNBOOK_APPROVER_KEY=a-key {RUNBOOK} {command}", tmp_path)
    assert done.returncode == 1, done
    assert "is the stack up? Run `runbook stack up`" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_reader_that_goes_away_gets_no_broken_pipe(tmp_path: Path) -> None:
    # `start --help` lists every procedure's keys: more than `head -1` reads.
    done = runbook(f"{RUNBOOK} start --help | head -1", tmp_path)
    assert done.stdout.startswith("usage: runbook start")
    assert "BrokenPipeError" not in done.stderr and "Traceback" not in done.stderr
