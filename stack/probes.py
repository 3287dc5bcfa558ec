"""Does a server answer? Each probe speaks the server's own protocol and gives up quickly."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import psycopg
import redis
from confluent_kafka.admin import AdminClient
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.envconfig import ClientConfig

PROBE_TIMEOUT = 1.0
T = TypeVar("T")


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def _host_port(address: str) -> tuple[str, int] | None:
    """host and port of a URL or `host:port[,more]` (the first one)."""
    first = address.split(",")[0].strip()
    parts = urlsplit(first if "//" in first else f"//{first}")
    if parts.hostname is None:
        return None
    default = {"https": 443, "http": 80, "postgresql": 5432, "postgres": 5432, "redis": 6379}
    try:
        port = parts.port or default.get(parts.scheme)
    except ValueError:
        return None
    return (parts.hostname, port) if port else None


def reachable(address: str) -> bool:
    """External parts: is something listening? (No credentials are used.)"""
    found = _host_port(address)
    return found is not None and tcp_open(*found)


def pg_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=1):
            return True
    except psycopg.Error:
        return False


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def kafka_answers(bootstrap: str) -> bool:
    # A TCP check first: librdkafka logs every refused connection on stderr.
    if not reachable(bootstrap):
        return False
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=PROBE_TIMEOUT)
    except Exception:  # KafkaException, or a timeout surfaced as one
        return False
    return True


def http_answers(url: str) -> bool:
    """Any HTTP status counts: the server is up."""
    try:
        httpx.get(url, timeout=PROBE_TIMEOUT)
    except httpx.HTTPError:
        return False
    return True


def temporal_answers(address: str) -> bool:
    if not reachable(address):
        return False
    return run_async(lambda: Client.connect(address)) is not None


def worker_polls(task_queue: str, environ: Mapping[str, str]) -> bool:
    """Is a worker polling `task_queue`? Connects as the worker does (TLS, API key)."""
    config = ClientConfig.load_client_connect_config(override_env_vars=dict(environ))
    request = DescribeTaskQueueRequest(
        namespace=config.get("namespace") or "default",
        task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )

    async def pollers() -> int:
        client = await Client.connect(**config)
        response = await client.workflow_service.describe_task_queue(request)
        return len(response.pollers)

    return bool(run_async(pollers))


def run_async(make: Callable[[], Awaitable[T]]) -> T | None:
    """Run a probe coroutine in its own thread and loop (the caller may be inside a loop)."""

    async def bounded() -> T:
        return await asyncio.wait_for(make(), timeout=3 * PROBE_TIMEOUT)

    with ThreadPoolExecutor(max_workers=1) as one:
        try:
            return one.submit(asyncio.run, bounded()).result()
        except Exception:  # RPCError, timeout, refused connection: not answering
            return None
