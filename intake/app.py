"""The alarm webhook: an ASGI app (Starlette) served by uvicorn.

POST /sns            CloudWatch alarms delivered by Amazon SNS (signature verified)
POST /alertmanager   Prometheus Alertmanager webhooks (Authorization: Bearer <token>)
GET  /routes         which alarm starts which runbook, and whether it is installed
POST /slack/interactions  the Slack app's buttons and modals (intake/slack.py)
POST /slack/commands      the `/runbook` slash command
GET  /health         liveness
GET  /metrics        requests by route and status, for Prometheus (intake/metrics.py)

A bad delivery gets a 4xx with `{"error": "<why>"}` and starts nothing; a good one gets 202
with the workflow id. Temporal unreachable: 503, so SNS and Alertmanager retry.
"""

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field, SecretStr, ValidationError
from slack_sdk import WebClient
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client
from temporalio.service import RPCError

from activities.alarms import AlarmOutcome, AlarmStarter, Coalescer
from client.namespace import NamespaceNotReady, check_namespace
from intake import payloads
from intake.alarms import Intake, Planned, Rejected
from intake.metrics import CountRequests, RequestCounter
from intake.routes import describe_routes, load_routes
from intake.slack import MAX_SLACK_BODY, SlackFront
from intake.sns import (
    DEFAULT_CERT_HOST_PATTERN,
    CertificateStore,
    SnsMessage,
    SnsRejected,
    UrlPolicy,
    verify,
)
from intake.tracing import TraceRequests
from settings import Settings, temporal_client
from telemetry import client_tracer, process_tracer
from workflows import registry

log = logging.getLogger("runbook.webhook")

MAX_BODY = 256 * 1024  # SNS's own message size limit
# An SNS message signed longer ago than this is refused: a replay, not an alarm.
SNS_MAX_AGE = timedelta(hours=1)
# SNS's clock and ours may disagree this much.
SNS_CLOCK_SKEW = timedelta(minutes=5)


class ConfigError(RuntimeError):
    """The intake cannot start as configured; the message says what to set."""


class WebhookConfig(Settings):
    """The intake's own settings beside the worker's (environments, task queues)."""

    # Alertmanager's `http_config.authorization.credentials`; unset: Alertmanager refused.
    token: SecretStr | None = Field(None, alias="RUNBOOK_WEBHOOK_TOKEN")
    # Hosts the SNS signing certificate and SubscribeURL may come from (a regex, full match).
    sns_cert_host_pattern: str = Field(DEFAULT_CERT_HOST_PATTERN, alias="SNS_CERT_HOST_PATTERN")
    # Comma-separated topic ARNs accepted. Empty is refused at start, except on the local
    # stack (RUNBOOK_LOCAL_STACK), where any topic whose message verifies is taken.
    sns_topic_arns: str = Field("", alias="SNS_TOPIC_ARNS")
    routes_file: Path | None = Field(None, alias="RUNBOOK_ALARM_ROUTES")
    local_stack: bool = Field(False, alias="RUNBOOK_LOCAL_STACK")
    # How old a (signed) SNS message may be: a captured one replayed later is refused.
    # SNS retries a failed HTTP delivery for up to an hour with its default policy.
    sns_max_age_seconds: float = Field(3600, gt=0, alias="SNS_MAX_AGE_SECONDS")
    # A storm's repeats of one alarm reach its run together, at first after this long.
    coalesce_seconds: float = Field(10, gt=0, le=300, alias="RUNBOOK_ALARM_COALESCE_SECONDS")
    # The Slack app (intake/slack.py): unset signing secret: the Slack endpoints answer 404.
    slack_signing_secret: SecretStr | None = Field(None, alias="SLACK_SIGNING_SECRET")
    slack_bot_token: SecretStr | None = Field(None, alias="SLACK_BOT_TOKEN")
    slack_api_url: str = Field("https://slack.com/api/", alias="SLACK_API_URL")

    def topics(self) -> set[str]:
        return {t.strip() for t in self.sns_topic_arns.split(",") if t.strip()}

    def check(self) -> None:
        if not self.topics() and not self.local_stack:
            raise ConfigError(
                "SNS_TOPIC_ARNS is empty: name the SNS topics whose alarms may start runbooks "
                "(comma-separated ARNs); without it any topic a message verifies for is taken"
            )


class Webhook:
    def __init__(self, config: WebhookConfig, client: Client, http: httpx.AsyncClient) -> None:
        self.config = config
        self.routes = load_routes(config.routes_file)
        # What the webhook starts is signed with RUNBOOK_INTAKE_KEY; the worker checks it.
        # Unset: alarm-started runs have no proven requester (P0/P1 then need two approvers).
        key = config.intake_key.get_secret_value() if config.intake_key else None
        starter = AlarmStarter(
            client, intake_key=key, coalescer=Coalescer(first=config.coalesce_seconds)
        )
        self.intake = Intake(starter, self.routes, config.profiles())
        self.policy = UrlPolicy(config.sns_cert_host_pattern)
        self.certs = CertificateStore(http, self.policy)
        self.http = http
        self.slack = slack_front(config, client, key)

    # ---- SNS ------------------------------------------------------------------------------

    async def sns(self, request: Request) -> Response:
        body = payloads.json_object(await read_body(request), "SNS message")
        try:
            message = SnsMessage.model_validate(body)
        except ValidationError as err:
            raise Rejected(400, f"bad SNS message: {payloads.problems(err)}") from None
        try:
            await verify(message, self.certs)
        except SnsRejected as err:
            raise Rejected(err.status, err.reason) from None
        topics = self.config.topics()
        if topics and message.topic_arn not in topics:
            raise Rejected(403, f"topic {message.topic_arn!r} is not one this webhook accepts")
        check_age(message.timestamp, timedelta(seconds=self.config.sns_max_age_seconds))
        if message.type == "SubscriptionConfirmation":
            return await self._confirm(message)
        if message.type == "UnsubscribeConfirmation":
            log.warning("unsubscribed from %s", message.topic_arn)
            return JSONResponse({"unsubscribed": message.topic_arn})
        alarm = payloads.cloudwatch_alarm(message.message, message.topic_arn)
        if alarm is None:
            return JSONResponse({"ignored": "INSUFFICIENT_DATA: no runbook for missing data"})
        outcome = await self._deliver(self.intake.plan(alarm))
        return JSONResponse(outcome, status_code=202)

    async def _confirm(self, message: SnsMessage) -> Response:
        if refusal := self.policy.refusal(message.subscribe_url, "SubscribeURL"):
            raise Rejected(403, refusal)
        assert message.subscribe_url is not None
        try:
            resp = await self.http.get(message.subscribe_url, timeout=10, follow_redirects=False)
        except httpx.HTTPError as err:
            raise Rejected(503, f"subscription not confirmed: {type(err).__name__}") from None
        if resp.status_code != 200:
            raise Rejected(503, f"subscription not confirmed: HTTP {resp.status_code}")
        log.info("subscription to %s confirmed", message.topic_arn)
        return JSONResponse({"confirmed": message.topic_arn})

    # ---- Alertmanager ---------------------------------------------------------------------

    async def alertmanager(self, request: Request) -> Response:
        self._authorize(request.headers.get("authorization"))
        alarms = payloads.alertmanager_alarms(await read_body(request))
        planned = [self.intake.plan(alarm) for alarm in alarms]  # all checked, then started
        outcomes = await asyncio.gather(*(self._deliver(p) for p in planned))
        return JSONResponse(
            {"workflow_ids": sorted({o["workflow_id"] for o in outcomes}), "alerts": outcomes},
            status_code=202,
        )

    def _authorize(self, header: str | None) -> None:
        token = self.config.token.get_secret_value().encode() if self.config.token else b""
        if not token:
            raise Rejected(403, "Alertmanager intake is off: RUNBOOK_WEBHOOK_TOKEN is not set")
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise Rejected(401, "missing bearer token: Authorization: Bearer <token> is required")
        if not hmac.compare_digest(given.strip().encode(), token):
            raise Rejected(401, "bad bearer token")

    # ---- both -----------------------------------------------------------------------------

    async def _deliver(self, planned: Planned) -> dict[str, Any]:
        try:
            outcome: AlarmOutcome = await self.intake.deliver(planned)
        except RPCError as err:
            raise Rejected(503, f"Temporal did not take the delivery: {err.message}") from None
        level = logging.INFO if outcome.action == "started" else logging.DEBUG
        log.log(
            level,
            "%s %s -> %s %s",
            planned.alarm.name,
            planned.alarm.state,
            outcome.workflow_id,
            outcome.action,
        )
        return {
            "alarm": planned.alarm.name,
            "state": planned.alarm.state,
            "procedure": planned.procedure,
            "severity": planned.severity,
            **outcome.model_dump(),
        }

    # ---- Slack ------------------------------------------------------------------------------

    async def slack_interactions(self, request: Request) -> Response:
        if self.slack is None:
            raise Rejected(404, "the Slack app is not configured: SLACK_SIGNING_SECRET is unset")
        return await self.slack.interactions(request, await read_body(request, MAX_SLACK_BODY))

    async def slack_commands(self, request: Request) -> Response:
        if self.slack is None:
            raise Rejected(404, "the Slack app is not configured: SLACK_SIGNING_SECRET is unset")
        return await self.slack.commands(request, await read_body(request, MAX_SLACK_BODY))

    async def routes_view(self, request: Request) -> Response:
        return JSONResponse(describe_routes(self.routes, set(registry.PROCEDURES)))


def check_age(timestamp: str, max_age: timedelta = SNS_MAX_AGE) -> None:
    """The signed Timestamp: a message older than `max_age` (an hour) is a replay, not an
    alarm; one from the future beyond clock skew is made up."""
    try:
        sent = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        raise Rejected(400, f"bad SNS Timestamp {timestamp[:40]!r}") from None
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)
    age = datetime.now(UTC) - sent
    if age > max_age:
        limit = "an hour" if max_age == SNS_MAX_AGE else f"{max_age.total_seconds():g} s"
        raise Rejected(
            403, f"SNS message signed {age.total_seconds() / 3600:.1f} h ago: older than {limit}"
        )
    if -age > SNS_CLOCK_SKEW:
        raise Rejected(403, f"SNS message from the future: signed {sent:%Y-%m-%d %H:%M:%S} UTC")


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, f"body over {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Rejected(413, f"body over {limit} bytes")
    return body


def slack_front(config: WebhookConfig, client: Client, intake_key: str | None) -> SlackFront | None:
    """The Slack endpoints when the app's signing secret is configured."""
    if config.slack_signing_secret is None:
        return None
    token = config.slack_bot_token.get_secret_value() if config.slack_bot_token else None
    web = WebClient(token=token, base_url=config.slack_api_url, timeout=10)
    secret = config.slack_signing_secret.get_secret_value()
    return SlackFront(client, secret, web, config.roster_file, intake_key, config.profile())


Handler = Callable[[Request], Awaitable[Response]]


def refusing(handler: Callable[[], Handler]) -> Handler:
    """A Rejected becomes its status and `{"error": reason}`."""

    async def run(request: Request) -> Response:
        try:
            return await handler()(request)
        except Rejected as err:
            log.warning(
                "%s %s refused %d: %s", request.method, request.url.path, err.status, err.reason
            )
            headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
            return JSONResponse({"error": err.reason}, status_code=err.status, headers=headers)

    return run


def create_app(config: WebhookConfig | None = None, client: Client | None = None) -> Starlette:
    """`client`: a connected Temporal client (tests); default: the environment's. Requests are
    traced with the client's tracer, or the process's when tracing is configured."""
    config = config or WebhookConfig()  # from the environment
    config.check()
    tracer = client_tracer(client) if client else process_tracer("runbook-intake")
    holder: dict[str, Webhook] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        temporal = client or await temporal_client(tracer=tracer)
        try:
            await check_namespace(temporal)
        except NamespaceNotReady as err:
            log.error("intake not started: %s", err)
            raise
        async with httpx.AsyncClient() as http:
            holder["hook"] = Webhook(config, temporal, http)
            if not config.topics():
                log.warning("SNS_TOPIC_ARNS is empty (local stack): any SNS topic is taken")
            yield

    def method(name: str) -> Callable[[], Handler]:
        return lambda: getattr(holder["hook"], name)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    counter = RequestCounter()
    routes = [
        Route("/sns", refusing(method("sns")), methods=["POST"]),
        Route("/alertmanager", refusing(method("alertmanager")), methods=["POST"]),
        Route("/routes", refusing(method("routes_view")), methods=["GET"]),
        Route("/slack/interactions", refusing(method("slack_interactions")), methods=["POST"]),
        Route("/slack/commands", refusing(method("slack_commands")), methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", counter.endpoint, methods=["GET"]),
    ]
    middleware = [Middleware(CountRequests, counter=counter, routes=routes)]
    if tracer is not None:
        middleware.append(Middleware(TraceRequests, tracer=tracer, routes=routes))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
