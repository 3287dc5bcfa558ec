"""A span per intake request (`POST /alertmanager`), the parent of what the request starts or
signals in Temporal (the client's tracing interceptor carries it into the run), so one trace
runs alarm -> workflow -> activities -> AWS calls. A caller's W3C `traceparent` is taken as the
span's parent. Only when tracing is configured (telemetry.py)."""

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from intake.metrics import route_name


class TraceRequests:
    """ASGI middleware: each HTTP request in a server span named by its method and route."""

    def __init__(self, app: ASGIApp, tracer: Any, routes: Sequence[BaseRoute]) -> None:
        self.app, self.tracer, self.routes = app, tracer, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry import propagate, trace

        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        name = f"{scope['method']} {route_name(self.routes, scope)}"
        with self.tracer.start_as_current_span(
            name, context=propagate.extract(headers), kind=trace.SpanKind.SERVER
        ) as span:

            async def answered(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    if message["status"] >= 500:
                        span.set_status(trace.Status(trace.StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, answered)
