"""The intake as the image runs it (`python -m intake`) logs JSON lines when asked: its own
log and uvicorn's, here for a start that fails (Temporal unreachable)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_ports

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "intake-log-token-that-is-secret"


def test_the_intake_logs_json_lines_without_its_token(tmp_path: Path) -> None:
    port = free_ports(("webhook",))["webhook"]
    env = {
        **os.environ,
        "RUNBOOK_STATE_DIR": str(tmp_path),
        "RUNBOOK_LOG_FORMAT": "json",
        "TEMPORAL_ADDRESS": "127.0.0.1:9",  # nothing listens: the start fails, and says so
        "SNS_TOPIC_ARNS": "arn:aws:sns:us-east-1:123456789012:alarms",
        "RUNBOOK_WEBHOOK_TOKEN": TOKEN,
    }
    done = subprocess.run(
        [sys.executable, "-m", "intake", "--port", str(port)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0  # uvicorn exits 3 on a failed start
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any(line["level"] == "error" and line["logger"].startswith("uvicorn") for line in lines)
    assert TOKEN not in done.stderr
