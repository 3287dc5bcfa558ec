"""One trace from an alarm to an AWS call: the intake's request span, the SDK's tracing
interceptor on its client and on the worker's, the botocore hook on the worker's AWS clients,
all exported to memory. The real db-failover workflow on the session stack's moto."""

import json
import time
from datetime import UTC, datetime

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from intake.app import WebhookConfig
from settings import Settings
from telemetry import client_interceptors
from tests.conftest import serving_webhook
from worker import build_worker

pytestmark = pytest.mark.timeout(180)

TOKEN = "trace-token-5c1e"


async def test_one_trace_runs_from_the_alarm_to_the_aws_call(
    dev_env: WorkflowEnvironment, stack_env: dict[str, str], aws_env: dict[str, str]
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    # One traced client for the intake and the worker, as each process would build its own.
    client = await Client.connect(
        dev_env.client.service_client.config.target_host,
        namespace=dev_env.client.namespace,
        data_converter=pydantic_data_converter,
        interceptors=client_interceptors(tracer),
    )
    queue = f"tracing-{time.monotonic_ns()}"
    settings = Settings.model_validate({**stack_env, "RUNBOOK_TASK_QUEUE": queue})
    config = WebhookConfig(token=TOKEN, task_queue=queue, local_stack=True)
    instance = f"traced-db-{time.monotonic_ns()}"
    alert = {
        "status": "firing",
        "labels": {"alertname": "db-cpu-high", "dbinstance_identifier": instance},
        "startsAt": datetime.now(UTC).isoformat(),
    }
    payload = json.dumps({"version": "4", "status": "firing", "alerts": [alert]})
    async with (
        httpx.AsyncClient() as http,
        build_worker(client, settings, http),
        serving_webhook(config, client) as url,
    ):
        reply = await http.post(
            f"{url}/alertmanager",
            content=payload,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )
        assert reply.status_code == 202, reply.text
        workflow_id = reply.json()["workflow_ids"][0]
        # The sandbox does not know the instance: the run refuses after reading it from AWS.
        result = await client.get_workflow_handle(workflow_id).result()
        assert result["outcome"] == "refused"
    provider.force_flush()

    spans = exporter.get_finished_spans()
    request = one(spans, "POST /alertmanager")
    assert request.kind == SpanKind.SERVER
    trace_spans = [s for s in spans if s.context and s.context.trace_id == trace_id(request)]
    names = {s.name for s in trace_spans}
    assert "RunWorkflow:DatabaseFailover" in names, names
    activity = one(trace_spans, "RunActivity:rds.describe_instance")
    aws = one(trace_spans, "RDS.DescribeDBInstances")
    assert aws.kind == SpanKind.CLIENT
    assert aws.parent is not None and activity.context is not None
    assert aws.parent.span_id == activity.context.span_id  # the call inside its activity
    assert aws.attributes and aws.attributes["rpc.method"] == "DescribeDBInstances"
    # Every span of the run's workflow and activities is in the alarm's trace.
    run_spans = [s for s in spans if s.name.startswith(("RunWorkflow:", "RunActivity:"))]
    assert run_spans and {trace_id(s) for s in run_spans} == {trace_id(request)}


def one(spans: list[ReadableSpan] | tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert found, f"no span {name!r} in {sorted({s.name for s in spans})}"
    return found[0]


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id
