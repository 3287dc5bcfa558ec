"""llm-budget: a campaign burst spent the day's LLM budget; the service's calls are refused
until a higher budget is in force.

The budget in force is `LLM_DAILY_BUDGET` of the secret `prod/revenue-context/config`, read
when `api` starts (a new deployment), never in between: raising it in Secrets Manager alone
changes nothing until the service is redeployed, as in production. Spend is counted in
Redis under `llm:spend:global:<UTC date>` (real Valkey when REDIS_URL is set).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sandbox.metric_feed import Series
from sandbox.replies import number
from sandbox.systems import Systems

CONFIG_SECRET = "prod/revenue-context/config"
BUDGET_KEY = "LLM_DAILY_BUDGET"
SPEND_PREFIX = "llm:spend:global:"
NAME = "llm-budget"
NAMESPACE = "RevenueContext/LLM"
CALLS_METRIC = "LlmApiCalls"
SEED_BUDGET = 100.0
SEED_SPEND = 35.0
# Other keys of the secret: they must survive every budget change. Sandbox values only.
SEED_SECRET: dict[str, str] = {
    BUDGET_KEY: "100.0",
    "DATABASE_URL": "postgresql://revenue:sandbox-db-password@db.internal:5432/revenue_context",
    "OPENAI_API_KEY": "sk-sandbox-0000000000000000000000000000",
    "ANTHROPIC_API_KEY": "sk-ant-sandbox-00000000000000000000",
    "JWT_SIGNING_KEY": "sandbox-jwt-signing-key-do-not-use",
    "STRIPE_API_KEY": "sk_test_sandbox_000000000000",
}
# Calls a minute to the LLM providers, normally and during the incident's campaign burst.
NORMAL_CALLS_PER_MINUTE, BURST_CALLS_PER_MINUTE = 120.0, 900.0
COST_PER_CALL = 0.002  # USD
TICK_SECONDS = 1.0


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class SpendStore:
    """Today's spend: Redis when configured (what the runbook reads), memory otherwise."""

    def __init__(self, redis_url: str | None) -> None:
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=2) if redis_url else None
        self._memory: dict[str, float] = {}

    def get(self) -> float:
        key = SPEND_PREFIX + today()
        if self._redis is None:
            return self._memory.get(key, 0.0)
        raw = self._redis.get(key)
        return float(raw) if raw is not None else 0.0

    def set(self, value: float) -> None:
        key = SPEND_PREFIX + today()
        if self._redis is None:
            self._memory[key] = value
        else:
            self._redis.set(key, repr(value))

    def add(self, amount: float) -> None:
        key = SPEND_PREFIX + today()
        if self._redis is None:
            self._memory[key] = self._memory.get(key, 0.0) + amount
        else:
            self._redis.incrbyfloat(key, amount)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


class LlmBudget:
    def __init__(self, systems: Systems, redis_url: str | None) -> None:
        self.systems = systems
        self.lock = threading.Lock()
        self.spend = SpendStore(redis_url)
        self.budget_in_force = SEED_BUDGET
        self.incident = False
        self.calls: dict[str, float] = {"ok": 0.0, "budget_exceeded": 0.0}
        self.calls_per_minute = NORMAL_CALLS_PER_MINUTE
        self.cost_per_call = COST_PER_CALL
        self.reloads = 0
        self.error: str | None = None
        self._read_secret: Callable[[], dict[str, Any]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llm-calls", daemon=True)

    # ---- life cycle ---------------------------------------------------------------------

    def start(self, secretsmanager: Any) -> None:
        self._secrets = secretsmanager
        self.seed_secret()
        self._read_secret = lambda: json.loads(
            secretsmanager.get_secret_value(SecretId=CONFIG_SECRET)["SecretString"]
        )
        self.reset()
        self._thread.start()

    def seed_secret(self) -> None:
        """The config secret back to its seed (a fresh secret, no version history)."""
        with contextlib.suppress(self._secrets.exceptions.ResourceNotFoundException):
            self._secrets.delete_secret(SecretId=CONFIG_SECRET, ForceDeleteWithoutRecovery=True)
        self._secrets.create_secret(Name=CONFIG_SECRET, SecretString=json.dumps(SEED_SECRET))

    def reset(self) -> None:
        with self.lock:
            self.incident = False
            # The calls it took to spend today's seed amount.
            self.calls = {"ok": round(SEED_SPEND / COST_PER_CALL), "budget_exceeded": 0.0}
            self.calls_per_minute = NORMAL_CALLS_PER_MINUTE
            self.cost_per_call = COST_PER_CALL
            self.budget_in_force = SEED_BUDGET
            self.reloads = 0
            self.error = None
        self._safe(lambda: self.spend.set(SEED_SPEND))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=3)
        self.spend.close()

    # ---- incident and remediation -------------------------------------------------------

    def inject(self) -> None:
        """A campaign burst spent today's budget: every further call is refused."""
        with self.lock:
            self.incident = True
            self.calls_per_minute = BURST_CALLS_PER_MINUTE
            budget = self.budget_in_force
            spent_before = self.calls["ok"] * self.cost_per_call
            # The burst's calls up to the budget, then a few minutes of refused ones.
            self.calls["ok"] += round(max(budget - spent_before, 0) / self.cost_per_call)
            self.calls["budget_exceeded"] += 5 * BURST_CALLS_PER_MINUTE
        self._safe(lambda: self.spend.set(budget))
        self.systems.rewrite(CALLS_METRIC)

    def heal(self) -> None:
        with self.lock:
            self.incident = False
            self.calls_per_minute = NORMAL_CALLS_PER_MINUTE
        self._safe(lambda: self.spend.set(SEED_SPEND))
        self.systems.rewrite(CALLS_METRIC)

    def reload_budget(self) -> None:
        """What a new deployment of `api` does: read LLM_DAILY_BUDGET from the secret."""
        if self._read_secret is None:
            return
        try:
            budget = float(self._read_secret()[BUDGET_KEY])
        except Exception as exc:  # a broken secret keeps the old budget, as the service would
            with self.lock:
                self.error = f"config reload failed: {type(exc).__name__}"
            return
        with self.lock:
            self.budget_in_force = budget
            self.reloads += 1
            self.error = None

    def configure(self, body: Any) -> None:
        """Body (both optional): calls_per_minute, cost_per_call, numbers >= 0."""
        calls_per_minute = number(body, "calls_per_minute")
        cost_per_call = number(body, "cost_per_call")
        with self.lock:
            if calls_per_minute is not None:
                self.calls_per_minute = calls_per_minute
            if cost_per_call is not None:
                self.cost_per_call = cost_per_call

    # ---- the service's calls ------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            self._safe(self.tick)

    def tick(self, seconds: float = TICK_SECONDS) -> None:
        with self.lock:
            calls = self.calls_per_minute * seconds / 60
            cost = calls * self.cost_per_call
            budget = self.budget_in_force
        spent = self.spend.get()
        allowed = cost <= 0 or spent + cost <= budget
        if allowed:
            self.spend.add(cost)
        with self.lock:
            self.calls["ok" if allowed else "budget_exceeded"] += calls
            self.incident = self.incident and not allowed

    def calls_at(self, when: datetime) -> float:
        """Calls in one minute, for the CloudWatch feed."""
        with self.lock:
            return self.calls_per_minute

    def series(self) -> Series:
        return Series(NAMESPACE, CALLS_METRIC, (("Service", "api"),), "Count", self.calls_at)

    def _safe(self, action: Callable[[], None]) -> None:
        try:
            action()
        except redis.RedisError as exc:
            with self.lock:
                self.error = f"redis: {type(exc).__name__}"

    # ---- what the service reports -------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        spent = self._spent_or_none()
        with self.lock:
            return {
                "budget_in_force": self.budget_in_force,
                "spend": spent,
                "spend_key": SPEND_PREFIX + today(),
                "incident": self.incident,
                "calls": dict(self.calls),
                "calls_per_minute": self.calls_per_minute,
                "cost_per_call": self.cost_per_call,
                "config_reloads": self.reloads,
                "error": self.error,
            }

    def _spent_or_none(self) -> float | None:
        try:
            return round(self.spend.get(), 4)
        except redis.RedisError:
            return None

    def collect(self) -> list[Any]:
        """The `llm_budget*` gauges and `llm_api_calls_total` counter on `/metrics`."""
        snap = self.snapshot()
        budget, spent = snap["budget_in_force"], snap["spend"] or 0.0
        gauges = {
            "llm_budget_daily_usd": ("Daily LLM budget in force (USD)", budget),
            "llm_budget_spent_usd": ("LLM spend today (USD)", spent),
            "llm_budget_remaining_usd": ("LLM budget left today (USD)", max(budget - spent, 0)),
            "llm_budget_exhausted": ("1 when today's budget is spent", float(spent >= budget)),
        }
        families: list[Any] = [
            GaugeMetricFamily(name, doc, value=value) for name, (doc, value) in gauges.items()
        ]
        calls = CounterMetricFamily("llm_api_calls", "LLM API calls by outcome", labels=["status"])
        for status, count in snap["calls"].items():
            calls.add_metric([status], round(count))
        families.append(calls)
        return families
