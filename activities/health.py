"""The service's HTTP health endpoints (`/health`, `/health/detailed`, `/health/workers`)."""

import asyncio
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

if TYPE_CHECKING:
    import httpx

HEALTH_PATHS = ("/health", "/health/detailed", "/health/workers")


class HealthRequest(BaseModel):
    path: str = "/health/detailed"
    timeout_seconds: float = Field(5.0, gt=0, le=60)


class HealthResult(BaseModel):
    path: str
    ok: bool
    status_code: int | None = None
    body: dict[str, Any] | None = None
    error: str | None = None
    latency_ms: float


class WaitHealthyRequest(BaseModel):
    path: str = "/health/detailed"
    poll_seconds: float = Field(2.0, gt=0)
    # How many consecutive 200s count as recovered: one lucky answer is not a recovery.
    consecutive: int = Field(2, ge=1)


class HealthActivities:
    def __init__(self, base_url: str, http: "httpx.AsyncClient") -> None:
        self._base_url = base_url.rstrip("/")
        self._http = http

    async def _get(self, path: str, timeout: float) -> HealthResult:
        if path not in HEALTH_PATHS:
            raise ApplicationError(
                f"path: {path!r} is not a health endpoint; allowed: {', '.join(HEALTH_PATHS)}",
                type="ValueError",
                non_retryable=True,
            )
        import httpx

        started = time.monotonic()
        try:
            resp = await self._http.get(self._base_url + path, timeout=timeout)
        except httpx.HTTPError as err:
            return HealthResult(
                path=path,
                ok=False,
                # httpx's timeouts carry no message: say what happened.
                error=f"{type(err).__name__}: {str(err) or f'no answer within {timeout:g}s'}",
                latency_ms=_ms_since(started),
            )
        return HealthResult(
            path=path,
            ok=resp.status_code == 200,
            status_code=resp.status_code,
            body=_json_or_none(resp),
            latency_ms=_ms_since(started),
        )

    @activity.defn(name="health.check")
    async def check(self, req: HealthRequest) -> HealthResult:
        return await self._get(req.path, req.timeout_seconds)

    @activity.defn(name="health.wait_healthy")
    async def wait_healthy(self, req: WaitHealthyRequest) -> HealthResult:
        """Poll until the endpoint answers 200 `consecutive` times in a row; the activity's
        start-to-close timeout bounds the wait."""
        streak = 0
        while True:
            result = await self._get(req.path, timeout=min(req.poll_seconds * 2, 10))
            streak = streak + 1 if result.ok else 0
            activity.heartbeat(result.status_code or result.error)
            if streak >= req.consecutive:
                return result
            await asyncio.sleep(req.poll_seconds)


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _json_or_none(resp: "httpx.Response") -> dict[str, Any] | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else {"value": body}
