"""Latency injected into the service's checks (`/control/latency`, for
bench/diagnosis_fanout.py): an HTTP path of the service or an AWS service of moto waits the
configured seconds before it answers."""

from __future__ import annotations

import threading
import time
from typing import Any

from moto.core.responses import BaseResponse

from sandbox.replies import BadRequest


class Latency:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = {}
        self._original_call_action: Any = None

    def set(self, body: Any) -> None:
        """Body: {"<check>": seconds}; checks: an HTTP path of the service (/metrics,
        /health/detailed, /health/workers) or an AWS service of moto (ecs, logs, cloudwatch)."""
        if not isinstance(body, dict) or not all(
            isinstance(v, int | float) and 0 <= v <= 60 for v in body.values()
        ):
            raise BadRequest("body must map check names to seconds between 0 and 60")
        with self._lock:
            self.seconds = {str(k): float(v) for k, v in body.items()}

    def clear(self) -> None:
        with self._lock:
            self.seconds.clear()

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self.seconds)

    def delay(self, key: str) -> None:
        seconds = self.seconds.get(key, 0.0)
        if seconds:
            time.sleep(seconds)

    def patch_moto(self) -> None:
        """Every moto request waits for its service's latency (in this process)."""
        original = BaseResponse.call_action
        self._original_call_action = original
        latency = self

        def call_action(response: BaseResponse) -> Any:
            latency.delay(str(response.service_name))
            return original(response)

        BaseResponse.call_action = call_action  # type: ignore[method-assign,assignment]

    def unpatch_moto(self) -> None:
        if self._original_call_action is not None:
            BaseResponse.call_action = self._original_call_action  # type: ignore[method-assign]
