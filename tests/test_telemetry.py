"""telemetry.py. Logs: JSON lines carrying the run's fields, and a secret that reached an
activity's input never in a line, not even in the SDK's own report of the activity's failure.
Traces: a configured process exports by OTLP (one trace through the system:
tests/e2e/test_tracing.py)."""

import io
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner

from telemetry import MASK, configure_logging, secret_values, tracing_configured
from tests.temporal_env import running

ROOT = Path(__file__).resolve().parents[1]
SECRET = "https://hooks.slack.test/services/T000/B000/very-secret-token"
module_log = logging.getLogger("runbook.test.probe")


class Post(BaseModel):
    webhook_url: str


@activity.defn(name="log-probe.post")
def post(inp: Post) -> str:
    activity.logger.info("posting to %s", inp.webhook_url)
    module_log.info("attempt %d", activity.info().attempt)  # a module logger: no SDK extras
    if activity.info().attempt == 1:
        raise RuntimeError(f"POST {inp.webhook_url} answered 503")
    return "posted"


@workflow.defn(name="LogProbe")
class LogProbe:
    @workflow.run
    async def run(self, url: str) -> str:
        workflow.logger.info("posting")
        return await workflow.execute_activity(
            post,
            Post(webhook_url=url),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=10)),
        )


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The root logger as the worker configures it with RUNBOOK_LOG_FORMAT=json, into a
    buffer; restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    monkeypatch.setenv("RUNBOOK_LOG_FORMAT", "json")
    buffer = io.StringIO()
    configure_logging(
        secret_values(SECRET, None, "short"), {"LogProbe": "log-probe"}, stream=buffer
    )
    yield buffer
    root.handlers[:], root.level = saved


async def test_json_lines_carry_the_run_and_never_the_secret(
    ts_env: WorkflowEnvironment, logged: io.StringIO
) -> None:
    async with running(
        ts_env, [LogProbe], [post], interceptors=[], workflow_runner=UnsandboxedWorkflowRunner()
    ) as queue:
        handle = await ts_env.client.start_workflow(
            LogProbe.run, SECRET, id="log-probe/json", task_queue=queue
        )
        assert await handle.result() == "posted"
    text = logged.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]  # every line one object
    assert SECRET not in text and MASK in text
    run = {"workflow_id": "log-probe/json", "run_id": handle.result_run_id}
    probe = [line for line in lines if line.get("activity") == "log-probe.post"]
    assert {line["message"] for line in probe} >= {
        f"posting to {MASK}",  # activity.logger, its argument masked
        "attempt 1",  # a module logger inside the activity
        "attempt 2",
    }
    for line in probe:
        assert line.items() >= {**run, "procedure": "log-probe"}.items(), line
        assert {"time", "level", "logger", "message"} <= line.keys()
    # The SDK's own warning of the failed attempt, with the error that named the URL.
    failed = [line for line in probe if line["level"] == "warning"]
    assert failed and f"POST {MASK} answered 503" in failed[0]["exception"]
    assert any(
        line["message"].startswith("posting") and line.get("activity") is None
        for line in lines
        if line.items() >= run.items()
    )  # workflow.logger: the run's fields, no activity


def test_text_stays_the_default_and_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    monkeypatch.delenv("RUNBOOK_LOG_FORMAT", raising=False)
    buffer = io.StringIO()
    try:
        configure_logging([SECRET], stream=buffer)
        logging.getLogger("runbook.test").warning("webhook %s refused", SECRET)
    finally:
        root.handlers[:], root.level = saved
    line = buffer.getvalue()
    assert line.endswith(f"WARNING runbook.test webhook {MASK} refused\n")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


# ---- the process's tracer: OTLP/HTTP to a collector ----------------------------------------


def test_a_configured_process_exports_its_spans_by_otlp() -> None:
    """What the worker, intake and CLI do when OTEL_EXPORTER_OTLP_ENDPOINT is set: spans
    batched, sent to the collector's /v1/traces when the process flushes before os._exit."""
    received: list[tuple[str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = (
        "import os\n"
        "from telemetry import flush_traces, process_tracer\n"
        "with process_tracer('runbook-probe').start_as_current_span('probe-span'): pass\n"
        "flush_traces()\n"
        "os._exit(0)\n"
    )
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}
    env.pop("OTEL_SERVICE_NAME", None)
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=60
        )
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert [path for path, _ in received] == ["/v1/traces"]
    body = received[0][1]  # protobuf: the names are in it as they are
    assert b"probe-span" in body and b"runbook-probe" in body


def test_tracing_is_off_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNBOOK_TRACING", "0")
    assert not tracing_configured()
    monkeypatch.setenv("RUNBOOK_TRACING", "1")
    assert tracing_configured()
