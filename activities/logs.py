"""CloudWatch Logs: the recent ERROR (and CRITICAL) lines of a service's log group."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

DIGITS = str.maketrans("0123456789", "##########")


class LogErrorsRequest(BaseModel):
    log_group: str = Field(min_length=1)
    minutes: int = Field(10, ge=1, le=24 * 60)
    # One filter a term (CloudWatch's `?A ?B` means either): ERROR, CRITICAL, ...
    terms: list[str] = Field(["ERROR"], min_length=1)
    # At most this many events are read (newest windows are busy during an incident).
    limit: int = Field(500, ge=1, le=10_000)
    samples: int = Field(5, ge=0, le=50)


class LogLine(BaseModel):
    timestamp: datetime
    stream: str
    message: str


class LogErrorsResult(BaseModel):
    log_group: str
    minutes: int
    total: int
    by_term: dict[str, int]
    # The most frequent messages (digits masked, so ids and durations group together).
    top_messages: dict[str, int]
    samples: list[LogLine]
    truncated: bool = False


def signature(message: str) -> str:
    return message.strip().translate(DIGITS)[:160]


class LogsActivities:
    def __init__(self, logs_client: Any) -> None:
        self._logs = logs_client

    def _events(self, req: LogErrorsRequest, term: str, start: int, end: int) -> list[dict]:
        events: list[dict] = []
        kwargs: dict[str, Any] = {
            "logGroupName": req.log_group,
            "startTime": start,
            "endTime": end,
            "filterPattern": term,
        }
        while len(events) < req.limit:
            try:
                page = self._logs.filter_log_events(**kwargs, limit=req.limit - len(events))
            except self._logs.exceptions.ClientError as err:
                if err.response["Error"]["Code"] == "ResourceNotFoundException":
                    raise ApplicationError(
                        f"log_group: no CloudWatch log group named {req.log_group!r}",
                        type="LogGroupNotFound",
                        non_retryable=True,
                    ) from err
                raise
            events += page.get("events", [])
            token = page.get("nextToken")
            if not token or not page.get("events"):
                break
            kwargs["nextToken"] = token
        return events

    @activity.defn(name="logs.recent_errors")
    def recent_errors(self, req: LogErrorsRequest) -> LogErrorsResult:
        end = datetime.now(UTC)
        start_ms = int((end - timedelta(minutes=req.minutes)).timestamp() * 1000)
        end_ms = int(end.timestamp() * 1000)
        seen: dict[str, dict] = {}
        by_term: dict[str, int] = {}
        for term in req.terms:
            events = self._events(req, term, start_ms, end_ms)
            by_term[term] = len(events)
            for event in events:
                seen.setdefault(event.get("eventId") or f"{term}{len(seen)}", event)
        ordered = sorted(seen.values(), key=lambda e: e.get("timestamp", 0), reverse=True)
        top = Counter(signature(e.get("message", "")) for e in ordered)
        return LogErrorsResult(
            log_group=req.log_group,
            minutes=req.minutes,
            total=len(ordered),
            by_term=by_term,
            top_messages=dict(top.most_common(5)),
            samples=[
                LogLine(
                    timestamp=datetime.fromtimestamp(e.get("timestamp", 0) / 1000, UTC),
                    stream=e.get("logStreamName", ""),
                    message=e.get("message", "")[:300],
                )
                for e in ordered[: req.samples]
            ],
            truncated=any(count >= req.limit for count in by_term.values()),
        )
