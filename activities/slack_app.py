"""The Slack app's Web API (chat.postMessage, chat.update) and its approval message.

The bot token is a secret: it stays in the client's Authorization header (slack-sdk
redacts that header in its debug log) and never appears in a result, an error message or a
log line of ours. slack-sdk's own retries are off: whether and when to retry is the
activity's retry policy, as for the webhook (activities/notify.py).
"""

from typing import Any

from temporalio.exceptions import ApplicationError

from activities.notify import EMOJI, Notification, SlackRef

# The approval message's buttons; the intake handles their clicks (value: the workflow id).
APPROVE_ACTION = "runbook.approve"
REJECT_ACTION = "runbook.reject"
# Slack's answers that a later attempt may not get; every other `ok: false` is permanent
# (invalid_auth, channel_not_found, not_in_channel, invalid_blocks, ...).
TRANSIENT = {
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
}
MAX_FINDINGS = 6


def _text(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def headline(note: Notification) -> str:
    return _text(f"{EMOJI[note.kind]} [{note.severity}] {note.title}", 150)


def approval_blocks(
    note: Notification, workflow_id: str, status: list[str], open: bool
) -> list[dict[str, Any]]:
    """The app message: headline, plan, key findings, level and deadline, the run's status,
    Approve / Reject while the gate is open, and the links."""
    from slack_sdk.models.blocks import (
        ActionsBlock,
        Block,
        ButtonElement,
        ContextBlock,
        HeaderBlock,
        MarkdownTextObject,
        SectionBlock,
    )

    blocks: list[Block] = [
        HeaderBlock(text=headline(note)),
        SectionBlock(text=MarkdownTextObject(text=_text(note.text, 3000))),
    ]
    if note.findings:
        lines = "\n".join(f"• {_text(f, 300)}" for f in note.findings[:MAX_FINDINGS])
        blocks.append(SectionBlock(text=MarkdownTextObject(text=f"*Key findings*\n{lines}")))
    if note.fields:
        blocks.append(
            SectionBlock(
                fields=[
                    MarkdownTextObject(text=_text(f"*{k}*\n{v}", 2000))
                    for k, v in list(note.fields.items())[:10]
                ]
            )
        )
    if status:
        blocks.append(
            ContextBlock(
                elements=[MarkdownTextObject(text=_text(line, 300)) for line in status[-10:]]
            )
        )
    buttons = []
    if open:
        buttons = [
            ButtonElement(
                text="Approve", action_id=APPROVE_ACTION, value=workflow_id, style="primary"
            ),
            ButtonElement(
                text="Reject", action_id=REJECT_ACTION, value=workflow_id, style="danger"
            ),
        ]
    links = [
        ButtonElement(text=_text(ln.label, 75), url=ln.url, action_id=f"link-{i}")
        for i, ln in enumerate(note.links[:5])
    ]
    if buttons or links:
        blocks.append(ActionsBlock(elements=[*buttons, *links]))
    return [block.to_dict() for block in blocks]


def slack_error(method: str, err: Exception) -> ApplicationError:
    """A typed error without the token, the URL or the body: Slack's error code and status.
    Retryable unless Slack said the request itself is wrong."""
    from slack_sdk.errors import SlackApiError

    if not isinstance(err, SlackApiError):
        return ApplicationError(f"Slack {method} unreachable: {type(err).__name__}")
    status = getattr(err.response, "status_code", 0)
    data = err.response.data if isinstance(err.response.data, dict) else {}
    code = str(data.get("error") or "no answer")
    code = "".join(c for c in code[:60] if c.isalnum() or c in "_-. ")
    transient = status == 429 or status >= 500 or code in TRANSIENT
    return ApplicationError(
        f"Slack {method} answered {status}: {code}", non_retryable=not transient
    )


class SlackApp:
    """The bot's Web API client, built once by the worker (settings: SLACK_BOT_TOKEN,
    SLACK_API_URL, the environment's channel)."""

    def __init__(self, token: str, api_url: str, channel: str) -> None:
        from slack_sdk.web.async_client import AsyncWebClient

        base = api_url if api_url.endswith("/") else api_url + "/"
        self.channel = channel
        self._client = AsyncWebClient(token=token, base_url=base, timeout=10, retry_handlers=[])

    async def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            resp = await self._client.api_call(method, json=kwargs)
        except Exception as err:  # SlackApiError, aiohttp's errors, a timeout
            raise slack_error(method, err) from None
        return dict(resp.data) if isinstance(resp.data, dict) else {}

    async def post(
        self, note: Notification, blocks: list[dict[str, Any]], thread: SlackRef | None
    ) -> SlackRef:
        """A new message, or a reply in `thread` (shown in the channel too when `broadcast`)."""
        answer = await self._call(
            "chat.postMessage",
            channel=thread.channel if thread else self.channel,
            text=headline(note),
            blocks=blocks,
            **({"thread_ts": thread.ts, "reply_broadcast": note.broadcast} if thread else {}),
        )
        try:
            return SlackRef(channel=answer.get("channel") or self.channel, ts=answer["ts"])
        except (KeyError, ValueError):
            raise ApplicationError(
                "Slack chat.postMessage answered without a message ts", non_retryable=True
            ) from None

    async def update(self, ref: SlackRef, note: Notification, blocks: list[dict[str, Any]]) -> None:
        await self._call(
            "chat.update", channel=ref.channel, ts=ref.ts, text=headline(note), blocks=blocks
        )
