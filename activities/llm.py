"""The LLM spend budget: today's spend in Redis, the budget gauges and call counters on
`/metrics` (parsed with prometheus_client), and the bounds a new budget must respect."""

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

if TYPE_CHECKING:
    import httpx

# The gauge that tells which daily budget the running service enforces.
BUDGET_IN_FORCE = "llm_budget_daily_usd"


class SpendRequest(BaseModel):
    # YYYY-MM-DD (UTC); None: today, as the service counts it.
    date: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$")


class Spend(BaseModel):
    key: str
    date: str
    spend: float
    found: bool


class LlmMetricsRequest(BaseModel):
    path: str = "/metrics"


class LlmMetrics(BaseModel):
    # Every `llm_budget*` sample, e.g. {"llm_budget_daily_usd": 100.0}.
    budget: dict[str, float]
    calls_total: float
    calls_by_status: dict[str, float]


class BudgetPolicyRequest(BaseModel):
    pass


class BudgetPolicy(BaseModel):
    """The range an approver may set the daily budget to (worker configuration)."""

    minimum: float
    maximum: float


class WaitBudgetRequest(BaseModel):
    expected: float
    poll_seconds: float = Field(2.0, gt=0, le=60)


class LlmActivities:
    def __init__(
        self,
        redis_client: Any,
        http: "httpx.AsyncClient",
        base_url: str,
        spend_key_prefix: str,
        policy: BudgetPolicy,
    ) -> None:
        self._redis = redis_client  # redis.asyncio.Redis
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._prefix = spend_key_prefix
        self._policy = policy

    @activity.defn(name="llm.spend")
    async def spend(self, req: SpendRequest) -> Spend:
        date = req.date or datetime.now(UTC).strftime("%Y-%m-%d")
        key = f"{self._prefix}{date}"
        raw = await self._redis.get(key)
        try:
            value = float(raw) if raw is not None else 0.0
        except ValueError:
            raise ApplicationError(
                f"{key} holds {raw!r}, not a number", type="SpendNotNumber", non_retryable=True
            ) from None
        return Spend(key=key, date=date, spend=round(value, 4), found=raw is not None)

    async def _metrics(self, path: str) -> LlmMetrics:
        resp = await self._http.get(self._base_url + path, timeout=10)
        resp.raise_for_status()
        return parse_llm_metrics(resp.text)

    @activity.defn(name="llm.metrics")
    async def metrics(self, req: LlmMetricsRequest) -> LlmMetrics:
        return await self._metrics(req.path)

    @activity.defn(name="llm.budget_policy")
    async def budget_policy(self, req: BudgetPolicyRequest) -> BudgetPolicy:
        return self._policy

    @activity.defn(name="llm.wait_budget_in_force")
    async def wait_budget_in_force(self, req: WaitBudgetRequest) -> LlmMetrics:
        """Poll `/metrics` until the service enforces the expected budget; the activity's
        start-to-close timeout bounds the wait."""
        import httpx

        while True:
            try:
                found = await self._metrics("/metrics")
            except httpx.HTTPError as err:
                activity.heartbeat(type(err).__name__)
            else:
                in_force = found.budget.get(BUDGET_IN_FORCE)
                activity.heartbeat(in_force)
                if in_force is not None and abs(in_force - req.expected) < 0.005:
                    return found
            await asyncio.sleep(req.poll_seconds)


def parse_llm_metrics(text: str) -> LlmMetrics:
    from prometheus_client.parser import text_string_to_metric_families

    budget: dict[str, float] = {}
    by_status: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("llm_budget"):
                budget[_sample_key(sample.name, sample.labels)] = sample.value
            elif sample.name == "llm_api_calls_total":
                status = sample.labels.get("status", "all")
                by_status[status] = by_status.get(status, 0.0) + sample.value
    return LlmMetrics(budget=budget, calls_total=sum(by_status.values()), calls_by_status=by_status)


def _sample_key(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"
