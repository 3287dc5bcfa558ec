"""Slack incoming-webhook notifications as Block Kit messages.

The webhook URL is a secret: it stays in the worker's settings and never appears in a
result, an error message or a log line.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

if TYPE_CHECKING:
    import httpx

    from activities.slack_app import SlackApp

Kind = Literal["approval_request", "escalation", "resolved", "failed", "rejected", "info"]
EMOJI: dict[str, str] = {
    "approval_request": ":raised_hand:",
    "escalation": ":rotating_light:",
    "resolved": ":white_check_mark:",
    "failed": ":x:",
    "rejected": ":no_entry_sign:",
    "info": ":information_source:",
}


class Link(BaseModel):
    label: str
    url: str


class SlackRef(BaseModel):
    """Where a Slack app message is: what chat.update and a thread reply need."""

    channel: str = Field(min_length=1, max_length=100)
    ts: str = Field(min_length=1, max_length=40)


class Notification(BaseModel):
    kind: Kind = "info"
    title: str
    severity: str
    text: str
    fields: dict[str, str] = {}
    links: list[Link] = []
    # Through a Slack app only (the webhook's message is as it always was): the diagnosis's
    # key findings, the run's message to reply under, and whether a reply shows in the
    # channel too.
    findings: list[str] = Field(default=[], max_length=20)
    thread: SlackRef | None = None
    broadcast: bool = False


class MessageUpdate(BaseModel):
    """The approval message as it is now: the request as first posted (its level fields
    updated on escalation), the run's status lines, and whether the buttons still show."""

    ref: SlackRef
    note: Notification
    status: list[str] = Field(default=[], max_length=20)
    open: bool = True


class PagerDutyEvent(BaseModel):
    action: Literal["trigger", "resolve"]
    dedup_key: str
    summary: str
    severity: str  # P0..P3, mapped to PagerDuty's severities


PAGERDUTY_SEVERITY = {"P0": "critical", "P1": "error", "P2": "warning", "P3": "info"}


class NotifyResult(BaseModel):
    delivered: bool
    detail: str
    message: SlackRef | None = None  # a Slack app message posted (none by a webhook)


def slack_blocks(note: Notification) -> dict[str, Any]:
    """Block Kit payload; `text` is the fallback shown in push notifications."""
    headline = f"{EMOJI[note.kind]} [{note.severity}] {note.title}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": note.text[:3000]}},
    ]
    if note.fields:
        blocks.append(
            {
                "type": "section",
                # Slack allows at most 10 fields a section.
                "fields": [
                    {"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]}
                    for k, v in list(note.fields.items())[:10]
                ],
            }
        )
    if note.links:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": ln.label},
                        "url": ln.url,
                    }
                    for ln in note.links[:5]
                ],
            }
        )
    return {"text": headline, "blocks": blocks}


def temporal_ui_run_url(ui_url: str, namespace: str, workflow_id: str, run_id: str) -> str:
    wid = quote(workflow_id, safe="")
    return f"{ui_url.rstrip('/')}/namespaces/{namespace}/workflows/{wid}/{run_id}/history"


@dataclass(frozen=True)
class PagerDutyConfig:
    # The routing key is a secret, like the Slack webhook URL.
    routing_key: str | None
    events_url: str = "https://events.pagerduty.com/v2/enqueue"


class NotifyActivities:
    def __init__(
        self,
        slack_webhook_url: str | None,
        http: "httpx.AsyncClient",
        temporal_ui_url: str,
        dashboards: list[Link],
        pagerduty: PagerDutyConfig | None = None,
        slack_channel: str | None = None,
        slack_app: "SlackApp | None" = None,
    ) -> None:
        self._slack_url = slack_webhook_url
        # With a bot token the messages go through the Slack app (activities/slack_app.py).
        self._app = slack_app
        # The environment's channel; a Slack app's webhook posts to its own channel (give
        # each environment's workers their own webhook), a legacy webhook takes this one.
        self._channel = slack_channel
        self._pagerduty = pagerduty or PagerDutyConfig(routing_key=None)
        self._http = http
        self._ui_url = temporal_ui_url
        self._dashboards = dashboards

    def _run_url(self) -> str:
        """The calling workflow's run in the Temporal UI."""
        info = activity.info()
        return temporal_ui_run_url(
            self._ui_url,
            info.workflow_namespace or "default",
            info.workflow_id or "",
            info.workflow_run_id or "",
        )

    def _with_links(self, note: Notification) -> Notification:
        """Every message links to its run in the Temporal UI and to the dashboards."""
        links = [Link(label="Temporal run", url=self._run_url()), *self._dashboards, *note.links]
        return note.model_copy(update={"links": links})

    async def _post(self, receiver: str, url: str, body: dict[str, Any], expected: int) -> None:
        import httpx

        try:
            resp = await self._http.post(url, json=body, timeout=10)
        except httpx.HTTPError as err:
            # The message of an httpx error names the URL: keep only its type.
            raise ApplicationError(f"{receiver} unreachable: {type(err).__name__}") from None
        if resp.status_code != expected:
            # 4xx means the payload or the webhook is wrong: retrying will not help, except 429.
            permanent = 400 <= resp.status_code < 500 and resp.status_code != 429
            raise ApplicationError(
                f"{receiver} answered {resp.status_code}", non_retryable=permanent
            )

    @activity.defn(name="notify.slack")
    async def slack(self, note: Notification) -> NotifyResult:
        if self._app is not None:
            return await self._post_app(note)
        if not self._slack_url:
            return NotifyResult(delivered=False, detail="SLACK_WEBHOOK_URL is not configured")
        payload = slack_blocks(self._with_links(note))
        if self._channel:
            payload["channel"] = self._channel
        await self._post("Slack webhook", self._slack_url, payload, 200)
        return NotifyResult(delivered=True, detail="sent to Slack")

    async def _post_app(self, note: Notification) -> NotifyResult:
        """An approval request becomes the app message with buttons; the rest is posted as
        the webhook's message is, in the run's thread when it has one."""
        from activities.slack_app import approval_blocks

        assert self._app is not None
        note = self._with_links(note)
        if note.kind == "approval_request":
            blocks = approval_blocks(note, activity.info().workflow_id or "", [], True)
        else:
            blocks = slack_blocks(note)["blocks"]
        ref = await self._app.post(note, blocks, note.thread)
        where = "in the run's thread" if note.thread else f"to {ref.channel}"
        return NotifyResult(delivered=True, detail=f"posted {where}", message=ref)

    @activity.defn(name="notify.slack_update")
    async def slack_update(self, update: MessageUpdate) -> NotifyResult:
        """The run's approval message updated in place (chat.update)."""
        from activities.slack_app import approval_blocks

        if self._app is None:
            return NotifyResult(delivered=False, detail="SLACK_BOT_TOKEN is not configured")
        note = self._with_links(update.note)
        info = activity.info()
        blocks = approval_blocks(note, info.workflow_id or "", update.status, update.open)
        await self._app.update(update.ref, note, blocks)
        return NotifyResult(delivered=True, detail="message updated", message=update.ref)

    @activity.defn(name="notify.pagerduty")
    async def pagerduty(self, event: PagerDutyEvent) -> NotifyResult:
        """Events API v2; the dedup key makes a retried trigger one alert, not two."""
        config = self._pagerduty
        if not config.routing_key:
            return NotifyResult(delivered=False, detail="PAGERDUTY_ROUTING_KEY is not configured")
        body: dict[str, Any] = {
            "routing_key": config.routing_key,
            "event_action": event.action,
            "dedup_key": event.dedup_key,
        }
        if event.action == "trigger":
            info = activity.info()
            body["payload"] = {
                "summary": event.summary[:1024],
                "source": info.workflow_id,
                "severity": PAGERDUTY_SEVERITY.get(event.severity, "error"),
            }
            body["links"] = [
                {
                    "href": self._run_url(),
                    "text": "Temporal run",
                }
            ]
        await self._post("PagerDuty", config.events_url, body, 202)
        return NotifyResult(delivered=True, detail=f"PagerDuty {event.action}")
