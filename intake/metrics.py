"""The intake's requests by route and status, for Prometheus at GET /metrics.

The route is the matched route's path, never the raw URL: a scanner's paths all count as
`other`, so the label set stays bounded.
"""

from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = "runbook_intake_requests"


class RequestCounter:
    """Requests by route, method and status; a registry of its own, so each app (and each
    test) counts its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            REQUESTS,
            "Intake HTTP requests, by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class CountRequests:
    """ASGI middleware: each HTTP request counted once it is answered (or has failed)."""

    def __init__(self, app: ASGIApp, counter: RequestCounter, routes: Sequence[BaseRoute]) -> None:
        self.app, self.counter, self.routes = app, counter, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless the app answers: an exception is a server error

        async def answered(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, answered)
        finally:
            route = route_name(self.routes, scope)
            self.counter.requests.labels(route, scope["method"], str(status)).inc()


def route_name(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The matched route's path; `other` for any path no route matches."""
    for route in routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            return getattr(route, "path", "other")
    return "other"
