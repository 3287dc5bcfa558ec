"""Read-only: today's LLM spend (Redis) and the daily budget in force, for the spend watch.

The budget comes from the service's own `/metrics` gauge first (it follows a budget raised by
the llm-budget runbook), from configuration when the gauge is missing or unreachable.
"""

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

if TYPE_CHECKING:
    import httpx

# The service's gauge of the budget in force; `llm_budget_daily` is the runbook's spelling.
BUDGET_GAUGES = ("llm_budget_daily_usd", "llm_budget_daily")


class SpendReadRequest(BaseModel):
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")  # UTC, as the service counts it


class SpendReading(BaseModel):
    date: str
    key: str
    spend: float
    budget: float | None
    budget_source: Literal["metrics", "config", "none"]
    detail: str = ""


class SpendActivities:
    def __init__(
        self,
        redis_client: Any,  # redis.asyncio.Redis
        http: "httpx.AsyncClient",
        base_url: str,
        key_prefix: str,
        configured_budget: float | None,
    ) -> None:
        self._redis = redis_client
        self._http = http
        self._metrics_url = base_url.rstrip("/") + "/metrics"
        self._prefix = key_prefix
        self._configured = configured_budget

    @activity.defn(name="spend_watch.read")
    async def read(self, req: SpendReadRequest) -> SpendReading:
        key = f"{self._prefix}{req.date}"
        raw = await self._redis.get(key)
        try:
            spend = float(raw) if raw is not None else 0.0
        except ValueError:
            raise ApplicationError(
                f"{key} holds {raw!r}, not a number", type="SpendNotNumber", non_retryable=True
            ) from None
        budget, detail = await self._metrics_budget()
        if budget is not None:
            return SpendReading(
                date=req.date, key=key, spend=spend, budget=budget, budget_source="metrics"
            )
        source: Literal["config", "none"] = "config" if self._configured else "none"
        return SpendReading(
            date=req.date,
            key=key,
            spend=spend,
            budget=self._configured,
            budget_source=source,
            detail=detail,
        )

    async def _metrics_budget(self) -> tuple[float | None, str]:
        import httpx

        try:
            resp = await self._http.get(self._metrics_url, timeout=10)
            resp.raise_for_status()
        except httpx.HTTPError as err:
            return None, f"/metrics unavailable ({type(err).__name__})"
        return budget_gauge(resp.text)


def budget_gauge(text: str) -> tuple[float | None, str]:
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in BUDGET_GAUGES and not sample.labels:
                found[sample.name] = sample.value
    for name in BUDGET_GAUGES:
        if name in found and found[name] > 0:
            return found[name], ""
    return None, f"/metrics has no {' or '.join(BUDGET_GAUGES)} gauge"
