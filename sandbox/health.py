"""Dependency checks behind `/health/detailed`: real when configured, simulated otherwise."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import psycopg
import redis

TIMEOUT_S = 1.0
Check = dict[str, Any]


def up(latency_ms: float, **extra: Any) -> Check:
    return {"status": "up", "latency_ms": round(latency_ms, 2), **extra}


def down(error: str) -> Check:
    return {"status": "down", "error": error}


def timed(probe: Callable[[], None]) -> Check:
    """Run a probe; any exception makes the dependency `down` with its message."""
    started = time.perf_counter()
    try:
        probe()
    except Exception as exc:
        return down(str(exc).strip() or type(exc).__name__)
    return up((time.perf_counter() - started) * 1000)


def check_postgres(url: str | None) -> Check:
    if not url:
        return up(1.2, simulated=True)

    def probe() -> None:
        with psycopg.connect(url, connect_timeout=int(TIMEOUT_S), autocommit=True) as conn:
            conn.execute("SELECT 1")

    return timed(probe)


def check_redis(url: str | None) -> Check:
    if not url:
        return up(0.4, simulated=True)

    def probe() -> None:
        client = redis.Redis.from_url(
            url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
        )
        try:
            client.ping()
        finally:
            client.close()

    return timed(probe)


def check_kafka(bootstrap: str | None) -> Check:
    """A TCP connect to the first broker: cheap, and enough to tell up from down."""
    if not bootstrap:
        return up(2.1, simulated=True)
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")

    def probe() -> None:
        socket.create_connection((host or "localhost", int(port or 9092)), TIMEOUT_S).close()

    return timed(probe)
