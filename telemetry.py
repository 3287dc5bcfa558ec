"""Traces and logs of the worker, the intake and the CLI (metrics: workflows/metrics.py).

Traces: off unless configured (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
or RUNBOOK_TRACING=1); then spans go by OTLP/HTTP to the collector (the exporter reads the
standard OTEL_* variables). One trace runs alarm -> workflow -> activities -> AWS calls: the
intake's request span, the SDK's TracingInterceptor on every client (a worker takes it from its
client), and a span per botocore call. OpenTelemetry is imported only when tracing is on.

Logs: text by default (the local stack); RUNBOOK_LOG_FORMAT=json gives one JSON object a line
with the run's workflow id, run id, procedure and activity. Known secret values are masked in
either format, whatever code logged them.
"""

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import IO, Any

from temporalio import activity, workflow

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
MASK = "***"


# ---- traces ------------------------------------------------------------------------------------


def tracing_configured() -> bool:
    wanted = os.environ.get("RUNBOOK_TRACING", "").lower() in ("1", "true")
    return wanted or any(os.environ.get(v) for v in ENDPOINT_VARIABLES)


@lru_cache
def process_tracer(service: str) -> Any:
    """This process's tracer (exporting by OTLP/HTTP, batched) when tracing is configured;
    else None. `service` is the resource's service.name unless OTEL_SERVICE_NAME says."""
    if not tracing_configured():
        return None
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or service
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider.get_tracer("runbook")


def flush_traces() -> None:
    """Send the spans still batched (before os._exit, which skips atexit)."""
    if tracing_configured() and process_tracer.cache_info().currsize:
        from opentelemetry import trace

        provider: Any = trace.get_tracer_provider()
        if hasattr(provider, "shutdown"):
            provider.shutdown()


def client_interceptors(tracer: Any) -> list[Any]:
    """The Temporal client's interceptors: the SDK's tracing one when `tracer` is given (a
    worker built on the client runs it too)."""
    if tracer is None:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(tracer)]


def client_tracer(client: Any) -> Any:
    """The tracer of a client's tracing interceptor; None when it has none (or no client)."""
    if client is None:
        return None
    for interceptor in client.config().get("interceptors", ()):
        if type(interceptor).__name__ == "TracingInterceptor":
            return interceptor.tracer
    return None


def trace_aws_calls(client: Any, tracer: Any) -> Any:
    """A span per call of a boto3 client (`RDS.DescribeDBInstances`), child of the running
    activity's span: botocore's own events, no instrumentation package. Returns the client."""
    if tracer is None:
        return client
    from opentelemetry import trace

    def before(model: Any, context: dict[str, Any], **_: Any) -> None:
        service = model.service_model.service_id
        span = tracer.start_span(f"{service}.{model.name}", kind=trace.SpanKind.CLIENT)
        span.set_attributes(
            {"rpc.system": "aws-api", "rpc.service": str(service), "rpc.method": model.name}
        )
        context["runbook_span"] = span

    def after(context: dict[str, Any], **kwargs: Any) -> None:
        span = context.pop("runbook_span", None)
        if span is None:
            return
        error = kwargs.get("exception")
        response = kwargs.get("http_response")
        if response is not None:
            span.set_attribute("http.status_code", response.status_code)
            if response.status_code >= 400:
                error = error or f"HTTP {response.status_code}"
        if error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
        span.end()

    events = client.meta.events
    events.register("before-call", before, unique_id="runbook-trace-before")
    events.register("after-call", after, unique_id="runbook-trace-after")
    events.register("after-call-error", after, unique_id="runbook-trace-error")
    return client


# ---- logs ---------------------------------------------------------------------------------------


def secret_values(*values: Any) -> list[str]:
    """The non-empty strings among settings' values (SecretStr or str), long enough to mask."""
    found = []
    for value in values:
        text = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        if isinstance(text, str) and len(text) >= 6:
            found.append(text)
    return found


def _masker(secrets: Iterable[str]) -> Callable[[str], str]:
    known = sorted(set(secrets), key=len, reverse=True)
    if not known:
        return lambda text: text
    pattern = re.compile("|".join(map(re.escape, known)))
    return lambda text: pattern.sub(MASK, text)


def _run_fields(record: logging.LogRecord, procedures: Mapping[str, str]) -> dict[str, str]:
    """The run a record was logged for: the SDK's logger extras, else the running activity."""
    run: dict[str, Any] = {}
    if isinstance(extra := getattr(record, "temporal_workflow", None), dict):
        run = {**extra}
    if isinstance(extra := getattr(record, "temporal_activity", None), dict):
        run = {**extra, "activity": extra.get("activity_type")}
    elif not run and activity.in_activity():
        info = activity.info()
        run = {
            "workflow_id": info.workflow_id,
            "run_id": info.workflow_run_id,
            "workflow_type": info.workflow_type,
            "activity": info.activity_type,
        }
    if "workflow_run_id" in run and "run_id" not in run:
        run["run_id"] = run["workflow_run_id"]
    workflow_type = str(run.get("workflow_type") or "")
    fields = {
        "workflow_id": run.get("workflow_id"),
        "run_id": run.get("run_id"),
        "procedure": procedures.get(workflow_type, workflow_type) or None,
        "activity": run.get("activity"),
    }
    return {k: str(v) for k, v in fields.items() if v}


class JsonLines(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the run's fields, the exception.
    Only these: a record's other extras and arguments are never dumped."""

    def __init__(self, secrets: Iterable[str] = (), procedures: Mapping[str, str] = {}) -> None:
        super().__init__()
        self._mask = _masker(secrets)
        self._procedures = dict(procedures)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_run_fields(record, self._procedures),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self._mask(json.dumps(line, default=str))


class MaskedText(logging.Formatter):
    """The text format, with known secrets masked."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._mask = _masker(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self._mask(super().format(record))


def configure_logging(
    secrets: Iterable[str] = (),
    procedures: Mapping[str, str] = {},
    level: int = logging.INFO,
    stream: IO[str] | None = None,
) -> None:
    """The root logger for a process (to stderr, or `stream`): JSON lines when
    RUNBOOK_LOG_FORMAT=json, else text."""
    json_lines = os.environ.get("RUNBOOK_LOG_FORMAT", "text").lower() == "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines(secrets, procedures) if json_lines else MaskedText(secrets))
    # The SDK's loggers append the run's info to the message; in JSON it has its own fields.
    activity.logger.activity_info_on_message = not json_lines
    workflow.logger.workflow_info_on_message = not json_lines
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # httpx logs every request's full URL at INFO: the Slack webhook URL is a secret.
    logging.getLogger("httpx").setLevel(logging.WARNING)
