"""The service's Prometheus `/metrics`, parsed with prometheus_client's parser: circuit
breakers, the 5xx share of requests over a window, any family by name."""

import asyncio
import time
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

if TYPE_CHECKING:
    import httpx

# The usual encoding of a breaker's state as a gauge (pybreaker, resilience4j, ...).
BREAKER_STATES = {0: "closed", 1: "open", 2: "half_open"}


class Sample(BaseModel):
    name: str
    labels: dict[str, str]
    value: float


class ScrapeRequest(BaseModel):
    # Metric family names (as the parser names them: a counter without `_total`).
    families: list[str] = Field(min_length=1)
    timeout_seconds: float = Field(5.0, gt=0, le=60)


class ScrapeResult(BaseModel):
    families: dict[str, list[Sample]]
    missing: list[str]


class BreakersRequest(BaseModel):
    family: str = "circuit_breaker_state"
    timeout_seconds: float = Field(5.0, gt=0, le=60)


class CircuitBreakers(BaseModel):
    # breaker name -> closed | open | half_open | <value>
    states: dict[str, str]
    open: list[str]
    exported: bool


class ErrorRateRequest(BaseModel):
    family: str = "http_requests"
    status_label: str = "status"
    window_seconds: float = Field(10.0, ge=0.1, le=600)
    timeout_seconds: float = Field(5.0, gt=0, le=60)


class ErrorRate(BaseModel):
    window_seconds: float
    requests: float
    errors: float
    # 5xx / all requests in the window; None when nothing was served.
    share: float | None


def parse(text: str, families: list[str]) -> ScrapeResult:
    from prometheus_client.parser import text_string_to_metric_families

    wanted = set(families)
    found: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        if family.name in wanted:
            found[family.name] = [
                Sample(name=s.name, labels=dict(s.labels), value=s.value) for s in family.samples
            ]
    return ScrapeResult(families=found, missing=sorted(wanted - set(found)))


def breakers_from(samples: list[Sample]) -> CircuitBreakers:
    states: dict[str, str] = {}
    for sample in samples:
        labels = sample.labels
        name = labels.get("breaker") or labels.get("name") or next(iter(labels.values()), "")
        name = name or sample.name
        states[name] = BREAKER_STATES.get(int(sample.value), f"{sample.value:g}")
    return CircuitBreakers(
        states=states, open=sorted(n for n, s in states.items() if s == "open"), exported=True
    )


def request_counts(samples: list[Sample], label: str) -> tuple[float, float]:
    """(all requests, 5xx requests) of a counter family's `_total` samples."""
    total = errors = 0.0
    for sample in samples:
        if not sample.name.endswith("_total"):
            continue
        total += sample.value
        if sample.labels.get(label, "").startswith("5"):
            errors += sample.value
    return total, errors


class PrometheusActivities:
    def __init__(self, base_url: str, http: "httpx.AsyncClient") -> None:
        self._url = base_url.rstrip("/") + "/metrics"
        self._http = http

    async def _scrape(self, families: list[str], timeout: float) -> ScrapeResult:
        import httpx

        try:
            resp = await self._http.get(self._url, timeout=timeout)
        except httpx.HTTPError as err:
            raise ApplicationError(f"/metrics unreachable: {type(err).__name__}") from None
        if resp.status_code != 200:
            raise ApplicationError(f"/metrics answered {resp.status_code}")
        return parse(resp.text, families)

    @activity.defn(name="prometheus.scrape")
    async def scrape(self, req: ScrapeRequest) -> ScrapeResult:
        return await self._scrape(req.families, req.timeout_seconds)

    @activity.defn(name="prometheus.circuit_breakers")
    async def circuit_breakers(self, req: BreakersRequest) -> CircuitBreakers:
        result = await self._scrape([req.family], req.timeout_seconds)
        if req.family in result.missing:
            return CircuitBreakers(states={}, open=[], exported=False)
        return breakers_from(result.families[req.family])

    @activity.defn(name="prometheus.error_rate")
    async def error_rate(self, req: ErrorRateRequest) -> ErrorRate:
        """Counters only grow: the share is taken from the difference of two scrapes."""
        first = await self._scrape([req.family], req.timeout_seconds)
        started = time.monotonic()
        await asyncio.sleep(req.window_seconds)
        second = await self._scrape([req.family], req.timeout_seconds)
        if req.family in second.missing:
            raise ApplicationError(
                f"family: /metrics has no {req.family!r} counter",
                type="ValueError",
                non_retryable=True,
            )
        total0, errors0 = request_counts(first.families.get(req.family, []), req.status_label)
        total1, errors1 = request_counts(second.families[req.family], req.status_label)
        # A restart resets counters: then the second scrape alone is the window.
        total, errors = (
            (total1 - total0, errors1 - errors0) if total1 >= total0 else (total1, errors1)
        )
        return ErrorRate(
            window_seconds=round(time.monotonic() - started, 2),
            requests=total,
            errors=errors,
            share=round(errors / total, 4) if total else None,
        )
