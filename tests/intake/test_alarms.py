"""The alarm webhook over real HTTP (uvicorn) on the Temporal dev server: signed SNS messages
with a certificate this test serves, Alertmanager payloads, every rejection, deduplication."""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.requesters import RequesterClaim, input_digest, judge_requester
from intake.alarms import redact
from intake.app import ConfigError, WebhookConfig, create_app
from intake.metrics import REQUESTS
from intake.routes import DEFAULT_ROUTES, AlarmRoute, find_resource, load_routes
from sandbox.sns_signer import SnsSigner, cloudwatch_alarm
from tests.conftest import serving_http, serving_webhook
from tests.fakes.stub_runbook import STUB_WORKER, StubRunbook, stub_procedure
from tests.fakes.systems import no_earlier_runs
from tests.temporal_env import eventually, running
from workflows import registry
from workflows.models import RunbookStatus

pytestmark = pytest.mark.timeout(120)

TOKEN = "am-token-4f1c9e"  # the test's bearer token: must never reach a workflow
INTAKE_KEY = "intake-key-5b7d2a"  # signs what the webhook starts: must never reach a workflow
TOPIC = "arn:aws:sns:us-east-1:123456789012:runbook-alarms"


ROUTES = {
    "thing-hot": {"procedure": "webhook-test", "severity": "P2", "resource_keys": ["ThingName"]},
    "thing-gone": {"procedure": "not-yet-written", "severity": "P1"},
    "api-error-rate-high": None,  # removed by the file
}


# ---- local servers: the signing certificate, the SubscribeURL ------------------------------


@dataclass
class CertServer:
    base: str
    pem: bytes = b""
    hits: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def cert_server() -> Iterator[CertServer]:
    served = CertServer(base="")

    def answer(path: str) -> tuple[int, bytes]:
        served.hits.append(path)
        return 200, served.pem if path.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"

    with serving_http(answer) as served.base:
        yield served


@pytest.fixture(scope="module")
def signer(cert_server: CertServer) -> SnsSigner:
    made = SnsSigner(f"{cert_server.base}/SimpleNotificationService-test.pem", TOPIC)
    cert_server.pem = made.pem()
    return made


# ---- the webhook on the dev server ----------------------------------------------------------


@dataclass
class Hook:
    url: str
    client: Client
    http: httpx.AsyncClient

    async def sns(self, body: dict[str, Any] | bytes) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.http.post(f"{self.url}/sns", content=content)

    async def alertmanager(
        self, payload: dict[str, Any] | bytes, token: str | None = TOKEN
    ) -> httpx.Response:
        content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.http.post(f"{self.url}/alertmanager", content=content, headers=headers)

    async def status(self, workflow_id: str) -> RunbookStatus:
        handle = self.client.get_workflow_handle(workflow_id)
        return await handle.query("status", result_type=RunbookStatus)

    async def runs(self, workflow_id: str, at_least: int = 1) -> int:
        """Runs with this id in visibility (eventually consistent: wait for `at_least`)."""
        query = f'WorkflowId = "{workflow_id}"'

        async def listed() -> int:
            count = len([wf async for wf in self.client.list_workflows(query)])
            return count if count >= at_least else 0

        found: int = await eventually(listed, f"{at_least} runs of {workflow_id}")
        return found

    async def exists(self, workflow_id: str) -> bool:
        try:
            await self.client.get_workflow_handle(workflow_id).describe()
        except RPCError as err:
            assert err.status == RPCStatusCode.NOT_FOUND
            return False
        return True


@pytest.fixture(scope="module")
async def hook(
    dev_env: WorkflowEnvironment, signer: SnsSigner, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Hook]:
    queue = f"webhook-{time.monotonic_ns()}"
    routes = tmp_path_factory.mktemp("routes") / "routes.json"
    routes.write_text(json.dumps(ROUTES))
    config = WebhookConfig(
        token=TOKEN,
        sns_cert_host_pattern=r"127\.0\.0\.1",
        sns_topic_arns=TOPIC,
        routes_file=routes,
        task_queue=queue,
        intake_key=INTAKE_KEY,
        coalesce_seconds=0.25,
    )
    procedure = stub_procedure("webhook-test", "thing", default="default-thing")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry.PROCEDURES, "webhook-test", procedure)
        async with (
            serving_webhook(config, dev_env.client) as url,
            running(dev_env, [StubRunbook], queue=queue, **STUB_WORKER),
            httpx.AsyncClient(timeout=30) as http,
        ):
            yield Hook(url, dev_env.client, http)


def thing_alarm(signer: SnsSigner, thing: str, state: str = "ALARM", **kw: Any) -> dict[str, Any]:
    return signer.notification(cloudwatch_alarm("thing-hot", state, {"ThingName": thing}, **kw))


def aged(signer: SnsSigner, thing: str, hours: float) -> dict[str, Any]:
    """A signed alarm whose Timestamp is `hours` from now (a captured message replayed)."""
    body = thing_alarm(signer, thing)
    sent = datetime.now(UTC) + timedelta(hours=hours)
    body["Timestamp"] = sent.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return signer.sign(body)


def am_payload(
    thing: str,
    status: str = "firing",
    name: str = "thing-hot",
    starts_at: datetime | None = None,
    **labels: str,
) -> dict:
    """An Alertmanager webhook; its repeats of one firing share `starts_at`."""
    alert = {
        "status": status,
        "labels": {"alertname": name, "thing_name": thing, **labels},
        "annotations": {"summary": f"{thing} is hot"},
        "startsAt": (starts_at or datetime.now(UTC)).isoformat(),
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": "abc123",
    }
    return {"version": "4", "status": status, "receiver": "runbook", "alerts": [alert]}


def alarm_lines(status: RunbookStatus) -> dict[str, str]:
    return {s.name: s.detail for s in status.timeline if s.name.startswith("alarm ")}


# ---- SNS --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
async def test_signed_cloudwatch_alarm_starts_the_runbook(
    hook: Hook, signer: SnsSigner, version: str
) -> None:
    thing = f"sns-v{version}"
    message = cloudwatch_alarm("thing-hot", "ALARM", {"ThingName": thing}, reason="temp 99 > 80")
    resp = await hook.sns(signer.notification(message, subject="ALARM: thing-hot", version=version))
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["workflow_id"] == f"webhook-test/production/{thing}" and body["action"] == "started"
    assert body["procedure"] == "webhook-test" and body["severity"] == "P2"
    status = await hook.status(body["workflow_id"])
    assert status.severity == "P2" and status.resource == thing
    assert "1x via cloudwatch" in alarm_lines(status)["alarm thing-hot ALARM"]
    assert "temp 99 > 80" in alarm_lines(status)["alarm thing-hot ALARM"]
    started = next(s for s in status.timeline if s.name == "started")
    assert "alarm:thing-hot via alarm" in started.detail


async def test_the_signing_certificate_is_fetched_once(
    hook: Hook, signer: SnsSigner, cert_server: CertServer
) -> None:
    for i in range(3):
        assert (await hook.sns(thing_alarm(signer, f"cached-{i}"))).status_code == 202
    assert [h for h in cert_server.hits if h.endswith(".pem")] == [
        "/SimpleNotificationService-test.pem"
    ]


async def test_subscription_is_confirmed_on_the_allowed_host_only(
    hook: Hook, signer: SnsSigner, cert_server: CertServer
) -> None:
    confirm = signer.subscription_confirmation(f"{cert_server.base}/?Action=ConfirmSubscription")
    resp = await hook.sns(confirm)
    assert resp.status_code == 200 and resp.json() == {"confirmed": TOPIC}
    assert "/?Action=ConfirmSubscription" in cert_server.hits
    elsewhere = signer.subscription_confirmation("https://sns.example.com/?Action=Confirm")
    resp = await hook.sns(elsewhere)
    assert resp.status_code == 403 and "SubscribeURL host 'sns.example.com'" in resp.text


async def test_ok_is_recorded_on_the_running_workflow_and_never_starts_one(
    hook: Hook, signer: SnsSigner
) -> None:
    assert (await hook.sns(thing_alarm(signer, "recovers"))).status_code == 202
    ok = await hook.sns(thing_alarm(signer, "recovers", "OK", reason="back under"))
    assert ok.status_code == 202 and ok.json()["action"] == "signalled"
    lines = alarm_lines(await hook.status("webhook-test/production/recovers"))
    assert (
        "1x via cloudwatch" in lines["alarm thing-hot OK"]
        and "back under" in lines["alarm thing-hot OK"]
    )
    lone = await hook.sns(thing_alarm(signer, "never-alarmed", "OK"))
    assert lone.status_code == 202 and lone.json()["action"] == "not_running"
    assert not await hook.exists("webhook-test/production/never-alarmed")


async def test_insufficient_data_is_ignored(hook: Hook, signer: SnsSigner) -> None:
    resp = await hook.sns(thing_alarm(signer, "no-data", "INSUFFICIENT_DATA"))
    assert resp.status_code == 200 and "INSUFFICIENT_DATA" in resp.json()["ignored"]
    assert not await hook.exists("webhook-test/production/no-data")


def tampered(signer: SnsSigner, thing: str) -> dict[str, Any]:
    body = thing_alarm(signer, thing)
    body["Message"] = body["Message"].replace(thing, "someone-else")
    return body


SNS_REJECTIONS: list[tuple[str, Any, int, str]] = [
    ("bad JSON", lambda s, t: b"{not json", 400, "bad JSON in SNS message"),
    ("not an object", lambda s, t: b"[1, 2]", 400, "a JSON object is required"),
    (
        "not an SNS message",
        lambda s, t: {"AlarmName": "thing-hot"},
        400,
        "bad SNS message: Type: Field required",
    ),
    (
        "unsigned",
        lambda s, t: {
            k: v for k, v in thing_alarm(s, t).items() if k not in ("Signature", "SignatureVersion")
        },
        401,
        "unsigned SNS message",
    ),
    ("tampered", tampered, 403, "bad SNS signature"),
    (
        "signature not base64",
        lambda s, t: {**thing_alarm(s, t), "Signature": "%%%"},
        403,
        "Signature is not base64",
    ),
    (
        "unknown signature version",
        lambda s, t: {**thing_alarm(s, t), "SignatureVersion": "3"},
        403,
        "SignatureVersion '3' is not 1 or 2",
    ),
    (
        "certificate from another host",
        lambda s, t: (
            s.sign({**thing_alarm(s, t), "SigningCertURL": "https://evil.example.com/c.pem"})
            | {"SigningCertURL": "https://evil.example.com/c.pem"}
        ),
        403,
        "SigningCertURL host 'evil.example.com' is not an allowed SNS host",
    ),
    (
        "another topic",
        lambda s, t: s.sign({**thing_alarm(s, t), "TopicArn": "arn:aws:sns:us-east-1:9:other"}),
        403,
        "topic 'arn:aws:sns:us-east-1:9:other' is not one this webhook accepts",
    ),
    (
        "not a CloudWatch alarm",
        lambda s, t: s.notification({"hello": t}),
        400,
        "SNS Message is not a CloudWatch alarm",
    ),
    (
        "unknown alarm",
        lambda s, t: s.notification(cloudwatch_alarm("disk-full", "ALARM", {"ThingName": t})),
        422,
        "unknown alarm 'disk-full': no route",
    ),
    (
        "procedure not installed",
        lambda s, t: s.notification(cloudwatch_alarm("thing-gone", "ALARM", {"ThingName": t})),
        422,
        "procedure not installed: 'not-yet-written'",
    ),
    (
        "resource that is not a name",
        lambda s, t: s.notification(
            cloudwatch_alarm("thing-hot", "ALARM", {"ThingName": f"{t}/../x"})
        ),
        422,
        "is not a name",
    ),
    (
        "signed more than an hour ago (a replay)",
        lambda s, t: s.sign({**thing_alarm(s, t), "Timestamp": "2026-01-01T00:00:00.000Z"}),
        403,
        "h ago: older than an hour",
    ),
    (
        "route removed by the routes file",
        lambda s, t: s.notification(cloudwatch_alarm("api-error-rate-high", "ALARM")),
        422,
        "unknown alarm 'api-error-rate-high'",
    ),
    ("nested 200 KB deep", lambda s, t: b"[" * 200_000, 400, "nested too deeply"),
    (
        "a Message nested deep",
        lambda s, t: s.notification("[" * 100_000),
        400,
        "bad JSON in SNS Message: nested too deeply",
    ),
    ("from the future", lambda s, t: aged(s, t, hours=1), 403, "from the future"),
]


@pytest.mark.parametrize(
    ("make", "status", "reason"),
    [r[1:] for r in SNS_REJECTIONS],
    ids=[r[0] for r in SNS_REJECTIONS],
)
async def test_bad_sns_delivery_says_why_and_starts_nothing(
    hook: Hook, signer: SnsSigner, make: Any, status: int, reason: str, request: Any
) -> None:
    thing = f"rejected-{request.node.callspec.id.replace(' ', '-')}"
    resp = await hook.sns(make(signer, thing))
    assert resp.status_code == status, resp.text
    assert reason in resp.json()["error"]
    assert not await hook.exists(f"webhook-test/production/{thing}")


def test_an_empty_topic_list_is_refused_at_start_outside_the_local_stack() -> None:
    with pytest.raises(ConfigError, match="SNS_TOPIC_ARNS is empty: name the SNS topics"):
        create_app(WebhookConfig(sns_topic_arns=""))
    create_app(WebhookConfig(sns_topic_arns="", local_stack=True))  # the sandbox's topic


async def test_oversized_body_is_refused(hook: Hook) -> None:
    resp = await hook.sns(b" " * (300 * 1024))
    assert resp.status_code == 413 and "body over" in resp.json()["error"]


# ---- Alertmanager -----------------------------------------------------------------------------


async def test_alertmanager_firing_then_resolved(hook: Hook) -> None:
    resp = await hook.alertmanager(am_payload("am-thing"))
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["workflow_ids"] == ["webhook-test/production/am-thing"]
    assert body["alerts"][0]["action"] == "started"
    resolved = await hook.alertmanager(am_payload("am-thing", "resolved"))
    assert resolved.status_code == 202 and resolved.json()["alerts"][0]["action"] == "signalled"
    lines = alarm_lines(await hook.status("webhook-test/production/am-thing"))
    assert "1x via alertmanager" in lines["alarm thing-hot ALARM"]
    assert "am-thing is hot" in lines["alarm thing-hot ALARM"]
    assert "1x via alertmanager" in lines["alarm thing-hot OK"]


AM_REJECTIONS: list[tuple[str, Any, str | None, int, str]] = [
    ("no token", lambda t: am_payload(t), None, 401, "missing bearer token"),
    ("wrong token", lambda t: am_payload(t), "am-token-4f1c9X", 401, "bad bearer token"),
    ("bad JSON", lambda t: b'{"alerts": [', TOKEN, 400, "bad JSON in Alertmanager payload"),
    ("no alerts", lambda t: {"status": "firing", "alerts": []}, TOKEN, 400, "alerts"),
    (
        "no alertname",
        lambda t: {**am_payload(t), "alerts": [{**am_payload(t)["alerts"][0], "labels": {}}]},
        TOKEN,
        400,
        "alerts.0.labels.alertname is missing",
    ),
    ("unknown alarm", lambda t: am_payload(t, name="disk-full"), TOKEN, 422, "unknown alarm"),
    ("nested 200 KB deep", lambda t: b'{"alerts": ' + b"[" * 200_000, TOKEN, 400, "too deeply"),
    (
        "one unknown alarm among known ones",
        lambda t: {
            **am_payload(t),
            "alerts": am_payload(t)["alerts"] + am_payload(t, name="disk-full")["alerts"],
        },
        TOKEN,
        422,
        "unknown alarm 'disk-full'",
    ),
]


@pytest.mark.parametrize(
    ("make", "token", "status", "reason"),
    [r[1:] for r in AM_REJECTIONS],
    ids=[r[0] for r in AM_REJECTIONS],
)
async def test_bad_alertmanager_delivery_says_why_and_starts_nothing(
    hook: Hook, make: Any, token: str | None, status: int, reason: str, request: Any
) -> None:
    thing = f"am-rejected-{request.node.callspec.id.replace(' ', '-')}"
    resp = await hook.alertmanager(make(thing), token=token)
    assert resp.status_code == status, resp.text
    assert reason in resp.json()["error"]
    if status == 401:
        assert resp.headers["www-authenticate"] == "Bearer"
    assert not await hook.exists(f"webhook-test/production/{thing}")


# ---- exactly once -----------------------------------------------------------------------------


async def test_a_storm_starts_one_workflow_and_counts_every_delivery(
    hook: Hook, signer: SnsSigner
) -> None:
    since = datetime.now(UTC).replace(microsecond=0)  # one episode, as both sources say it
    sns = [thing_alarm(signer, "stormy", changed_at=since) for _ in range(25)]
    am = [am_payload("stormy", starts_at=since) for _ in range(25)]
    replies = await asyncio.gather(
        *(hook.sns(body) for body in sns), *(hook.alertmanager(body) for body in am)
    )
    assert [r.status_code for r in replies] == [202] * 50
    actions = [r.json()["action"] for r in replies[:25]]
    actions += [r.json()["alerts"][0]["action"] for r in replies[25:]]
    # The first starts the run; the repeats reach it together, with their count (those
    # that come after an interval is over are sent at once: how many depends on the machine).
    assert actions.count("started") == 1 and set(actions) <= {"started", "coalesced", "signalled"}
    assert await hook.runs("webhook-test/production/stormy") == 1
    lines = await alarm_lines_once(hook, "webhook-test/production/stormy", "50x via ")
    # One timeline line for the alarm state, whichever source delivered it last.
    assert list(lines) == ["alarm thing-hot ALARM"]


async def test_a_long_storm_adds_a_few_signals_not_one_a_delivery(hook: Hook) -> None:
    """300 deliveries over about 3 s (the test's first interval is 0.25 s): every one is
    counted on the run, and its history holds a handful of alarm signals."""
    since = datetime.now(UTC)
    for wave in range(10):
        waves = (hook.alertmanager(am_payload("long", starts_at=since)) for _ in range(30))
        replies = await asyncio.gather(*waves)
        assert {r.status_code for r in replies} == {202}, wave
        await asyncio.sleep(0.3)
    await alarm_lines_once(hook, "webhook-test/production/long", "300x via ")
    history = await hook.client.get_workflow_handle("webhook-test/production/long").fetch_history()
    signals = [
        e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    started = history.events[0].workflow_execution_started_event_attributes
    # One with the start, then one an interval (doubling while the storm lasts): a handful
    # here (8 at load 2); bounded by a tenth of the deliveries whatever the machine's speed.
    assert 1 + len(signals) <= 30, len(signals)
    # The start was signed by the intake: the worker's check proves its requester.
    fields = json.loads(started.input.payloads[0].data)
    model = registry.PROCEDURES["webhook-test"].input_model
    claim = RequesterClaim(
        requester=fields["requested_by"],
        trigger=fields["trigger"],
        workflow_type="StubRunbook",
        workflow_id="webhook-test/production/long",
        run_id=history.events[
            0
        ].workflow_execution_started_event_attributes.original_execution_run_id,
        run_started_at=history.events[0].event_time.ToDatetime(tzinfo=UTC),
        input_digest=input_digest(model.model_validate(fields).model_dump(mode="json")),
        proof=fields["requester_proof"],
    )
    verdict = await judge_requester(claim, {}, INTAKE_KEY, no_earlier_runs)
    assert verdict.proven and fields["requested_by"] == "alarm:thing-hot", verdict


async def alarm_lines_once(hook: Hook, workflow_id: str, prefix: str) -> dict[str, str]:
    """The alarm lines once the one for thing-hot ALARM starts with `prefix` (held repeats
    arrive when their interval is over)."""

    async def counted() -> dict[str, str] | None:
        lines = alarm_lines(await hook.status(workflow_id))
        return lines if lines.get("alarm thing-hot ALARM", "").startswith(prefix) else None

    found: dict[str, str] = await eventually(counted, f"{workflow_id}: {prefix!r}")
    return found


async def test_an_episode_handled_by_an_ended_run_is_not_started_again(
    hook: Hook, signer: SnsSigner
) -> None:
    since = datetime.now(UTC) - timedelta(minutes=5)
    first = await hook.sns(thing_alarm(signer, "ended", changed_at=since))
    assert first.json()["action"] == "started"
    handle = hook.client.get_workflow_handle("webhook-test/production/ended")
    await handle.signal(StubRunbook.finish)
    assert await handle.result() == "done"
    # A repeat within the coalescing interval is held, then sent and suppressed too: wait
    # the interval out (the hook's: 0.25 s) to see the answer at once.
    await asyncio.sleep(0.5)
    again = await hook.sns(thing_alarm(signer, "ended", changed_at=since))
    assert again.status_code == 202 and again.json()["action"] == "suppressed"
    assert "was handled by run" in again.json()["detail"]
    assert await hook.runs("webhook-test/production/ended") == 1
    later = await hook.sns(thing_alarm(signer, "ended", changed_at=datetime.now(UTC)))
    assert later.status_code == 202 and later.json()["action"] == "started"
    assert await hook.runs("webhook-test/production/ended", at_least=2) == 2


async def test_no_secret_reaches_the_workflow_history(hook: Hook) -> None:
    payload = am_payload("leaky")
    payload["alerts"][0]["annotations"]["summary"] = (
        "login failed password=hunter2 with Authorization: Bearer sk-live-abcdef"
    )
    assert (await hook.alertmanager(payload)).status_code == 202
    history = await hook.client.get_workflow_handle("webhook-test/production/leaky").fetch_history()
    text = history.to_json()
    assert "hunter2" not in text and "sk-live-abcdef" not in text and TOKEN not in text
    assert INTAKE_KEY not in text
    assert (
        "password=[redacted]"
        in alarm_lines(await hook.status("webhook-test/production/leaky"))["alarm thing-hot ALARM"]
    )


async def test_routes_and_health(hook: Hook) -> None:
    assert (await hook.http.get(f"{hook.url}/health")).json() == {"status": "ok"}
    routes = {r["alarm"]: r for r in (await hook.http.get(f"{hook.url}/routes")).json()}
    assert (
        routes["db-cpu-high"]["procedure"] == "db-failover" and routes["db-cpu-high"]["installed"]
    )
    assert routes["thing-hot"]["installed"] and not routes["thing-gone"]["installed"]
    assert "api-error-rate-high" not in routes


# ---- pure parts -------------------------------------------------------------------------------


async def intake_requests(hook: Hook) -> dict[tuple[str, str, str], float]:
    resp = await hook.http.get(f"{hook.url}/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
        if s.name == f"{REQUESTS}_total"
    }


async def test_metrics_count_requests_by_route_and_status(hook: Hook) -> None:
    before = await intake_requests(hook)
    assert (await hook.alertmanager(am_payload("metrics-thing"))).status_code == 202
    assert (await hook.alertmanager(am_payload("metrics-thing"), token="wrong")).status_code == 401
    assert (await hook.http.get(f"{hook.url}/wp-admin/{uuid.uuid4()}")).status_code == 404
    after = await intake_requests(hook)
    grew = {key: n - before.get(key, 0) for key, n in after.items() if n != before.get(key, 0)}
    assert grew == {
        ("/alertmanager", "POST", "202"): 1,
        ("/alertmanager", "POST", "401"): 1,
        ("other", "GET", "404"): 1,  # a scanner's path is no label of its own
        ("/metrics", "GET", "200"): 1,  # the scrape before
    }


def test_default_routes_cover_the_runbook_alarms() -> None:
    expected = {
        "db-cpu-high": ("db-failover", "P1"),
        "db-connections-high": ("db-failover", "P1"),
        "kafka-lag-high": ("kafka-lag", "P2"),
        "api-error-rate-high": ("api-errors", "P1"),
        "ecs-memory-high": ("high-memory", "P2"),
    }
    for name, (procedure, severity) in expected.items():
        assert (DEFAULT_ROUTES[name].procedure, DEFAULT_ROUTES[name].severity) == (
            procedure,
            severity,
        )
    assert {DEFAULT_ROUTES[n].procedure for n in DEFAULT_ROUTES if n.startswith("health-")} <= {
        "triage",
        "kafka-lag",
    }


def test_routes_file_adds_replaces_and_removes(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    path.write_text(
        json.dumps(
            {"db-cpu-high": {"procedure": "db-failover", "severity": "P0"}, "kafka-lag-high": None}
        )
    )
    routes = load_routes(path)
    assert routes["db-cpu-high"].severity == "P0" and "kafka-lag-high" not in routes
    path.write_text(json.dumps({"x": {"procedure": "db-failover", "severity": "P9"}}))
    with pytest.raises(ValueError, match="severity"):
        load_routes(path)


def test_resource_keys_match_dimensions_and_labels_alike() -> None:
    route = AlarmRoute(
        procedure="db-failover",
        severity="P1",
        resource_keys=DEFAULT_ROUTES["db-cpu-high"].resource_keys,
    )
    assert find_resource(route, {"DBInstanceIdentifier": "a"}) == "a"
    assert find_resource(route, {"dbinstance_identifier": "b"}) == "b"
    assert find_resource(route, {"db_instance_id": "c"}) == "c"
    assert find_resource(route, {"instance": "d"}) is None


def test_redact_keeps_the_story_and_drops_credentials() -> None:
    text = redact(
        "conn postgresql://app:s3cret@db:5432/x failed; token: abc123; key AKIAABCDEFGHIJKLMNOP"
    )
    assert "s3cret" not in text and "abc123" not in text and "AKIAABCDEFGHIJKLMNOP" not in text
    assert text.startswith("conn postgresql://[redacted]@db:5432/x failed")
    assert redact("x" * 1000).startswith("[redacted]") and len(redact("y " * 1000)) == 300
