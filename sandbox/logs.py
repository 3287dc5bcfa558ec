"""CloudWatch Logs of the three services in moto: INFO lines all the time, ERROR and CRITICAL
lines while an incident lasts (and backfilled over the last minutes when it starts)."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

SERVICES = ("api", "context-engine", "orchestration-engine")
TICK_SECONDS = 2.0
BACKFILL_MINUTES = 5
log = logging.getLogger("sandbox.logs")


def log_group(service: str) -> str:
    return f"/ecs/production/{service}"


INFO_LINES: dict[str, tuple[str, ...]] = {
    "api": ("INFO GET /v1/accounts/{n}/context 200 in {ms} ms", "INFO POST /v1/signals 202"),
    "context-engine": ("INFO processed {n} signals from signals.raw in {ms} ms",),
    "orchestration-engine": ("INFO sequence step scheduled for account acct-{n}",),
}
# incident -> service -> lines (a `{n}`/`{ms}` is filled in)
ERROR_LINES: dict[str, dict[str, tuple[str, ...]]] = {
    "kafka-lag": {
        "context-engine": (
            "ERROR signal_processor: failed to enrich signal {n}: "
            "canceling statement due to statement timeout ({ms} ms)",
            "ERROR consumer: message moved to signals.raw.dlq after 3 attempts: "
            "SchemaValidationError: field 'account_id' is required",
            "ERROR worker heartbeat late by {ms} ms; partition processing behind",
        ),
    },
    "api-errors": {
        "api": (
            "ERROR request failed: GET /v1/accounts/{n}/context 503: upstream timeout "
            "after {ms} ms",
            "ERROR worker pool saturated: {n} requests queued",
            "CRITICAL container exited: request pool exhausted, {n} requests dropped",
        ),
    },
}


class LogFeed:
    def __init__(self, client: Callable[[str], Any], active: Callable[[], set[str]]) -> None:
        self._make_client = client
        self._logs: Any = None
        self._active = active  # incidents that write error lines now
        self._rng = random.Random(7)
        self._streams: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-feed", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        logs = self._logs = self._make_client("logs")
        for service in SERVICES:
            group = log_group(service)
            existing = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
            if not any(g["logGroupName"] == group for g in existing):
                logs.create_log_group(logGroupName=group)
            stream = f"ecs/{service}/{uuid.uuid4().hex}"
            logs.create_log_stream(logGroupName=group, logStreamName=stream)
            self._streams[service] = stream
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def clear(self) -> None:
        """A reset: the lines written so far are gone, each service writes to a fresh stream
        (else a triage right after a reset still sees the last incident's errors)."""
        with self._lock:
            for service in SERVICES:
                group = log_group(service)
                for old in self._logs.describe_log_streams(logGroupName=group)["logStreams"]:
                    self._logs.delete_log_stream(
                        logGroupName=group, logStreamName=old["logStreamName"]
                    )
                stream = f"ecs/{service}/{uuid.uuid4().hex}"
                self._logs.create_log_stream(logGroupName=group, logStreamName=stream)
                self._streams[service] = stream

    def backfill(self, incident: str, per_minute: int = 6) -> None:
        """The incident's error lines over the last minutes, as if it began a while ago."""
        now = time.time()
        for service, lines in ERROR_LINES.get(incident, {}).items():
            stamps = [
                now - minute * 60 - second
                for minute in range(BACKFILL_MINUTES, 0, -1)
                for second in range(0, 60, 60 // per_minute)
            ]
            self._put(service, [(t, self._fill(self._rng.choice(lines))) for t in sorted(stamps)])

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.tick()
            except Exception as err:  # moto gone at shutdown, or a transient error
                log.debug("log feed: %s", err)

    def tick(self) -> None:
        now = time.time()
        active = self._active()
        for service in SERVICES:
            lines = [(now, self._fill(self._rng.choice(INFO_LINES[service])))]
            for incident in active:
                for line in ERROR_LINES.get(incident, {}).get(service, ()):
                    lines.append((now, self._fill(line)))
            self._put(service, lines)

    def _fill(self, line: str) -> str:
        return line.format(n=self._rng.randint(1000, 99999), ms=self._rng.randint(800, 5000))

    def _put(self, service: str, lines: list[tuple[float, str]]) -> None:
        with self._lock:
            self._logs.put_log_events(
                logGroupName=log_group(service),
                logStreamName=self._streams[service],
                logEvents=[{"timestamp": int(t * 1000), "message": m} for t, m in lines],
            )
