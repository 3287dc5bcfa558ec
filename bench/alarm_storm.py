"""Alarm storm: N deliveries for R distinct resources against the local stack's webhook.

    .venv/bin/python bench/alarm_storm.py [--deliveries 10000] [--resources 50]
        [--concurrency 64] [--source mixed|sns|alertmanager] [--running]

By default it starts its own stack (Temporal dev server, worker, webhook and what the worker
needs) on free ports in a temporary state dir, and stops it at the end; `--running` uses the
stack that `runbook stack up` started (its webhook must know the token in
RUNBOOK_WEBHOOK_TOKEN, and for SNS trust 127.0.0.1 as certificate host).

Each resource is an RDS instance name the sandbox does not know, alarmed by `db-cpu-high`:
the first delivery starts `db-failover/<instance>`, which ends `refused`; every other
delivery is recorded on the running workflow or suppressed as part of the same alarm episode.
It prints requests per second, p50 and p99 latency, and the workflows started, counted in
Temporal visibility; exit status 1 unless exactly one workflow a resource was started.
"""

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from temporalio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.sns_signer import SnsSigner, cloudwatch_alarm
from stack.local import Stack

ALARM = "db-cpu-high"
# The storm needs Temporal, the worker, the webhook and AWS (moto) for the RDS lookups. The
# simulated service, PostgreSQL, Valkey and Kafka would only take CPU from the measurement
# on a small machine: they are configured at a closed port, so the stack does not start them
# (the workflow's checks of them fail fast and are reported unavailable).
CLOSED = "127.0.0.1:9"
LEAN = {
    "API_BASE_URL": f"http://{CLOSED}",
    "DATABASE_URL": f"postgresql://{CLOSED}/revenue_context",
    "REDIS_URL": f"redis://{CLOSED}/0",
    "KAFKA_BOOTSTRAP_SERVERS": CLOSED,
}


def free_port() -> int:
    while True:
        port = random.randrange(10000, 30000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@contextmanager
def cert_server(signer_box: dict[str, SnsSigner]) -> Iterator[str]:
    """Serves the signer's certificate to the webhook (the allowed host is 127.0.0.1)."""
    port = free_port()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = signer_box["signer"].pem()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}/SimpleNotificationService-bench.pem"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def own_stack(token: str, topic: str) -> Iterator[dict[str, str]]:
    state = Path(tempfile.mkdtemp(prefix="runbook-bench-"))
    state.chmod(0o755)
    drop = (
        "TEMPORAL_ADDRESS",
        "API_BASE_URL",
        "AWS_ENDPOINT_URL",
        "DATABASE_URL",
        "REDIS_URL",
        "KAFKA_BOOTSTRAP_SERVERS",
        "RUNBOOK_WEBHOOK_URL",
        "TEMPORAL_UI_URL",
        "SANDBOX_URL",
    )
    environ = {k: v for k, v in os.environ.items() if k not in drop and "RUNBOOK_PORT_" not in k}
    environ |= {
        "RUNBOOK_WEBHOOK_TOKEN": token,
        "SNS_CERT_HOST_PATTERN": r"127\.0\.0\.1",
        "SNS_TOPIC_ARNS": topic,
        **LEAN,
    }
    ports = {
        part: free_port()
        for part in (
            "postgres",
            "redis",
            "kafka",
            "sandbox",
            "aws",
            "temporal",
            "temporal-ui",
            "webhook",
        )
    }
    stack = Stack(state, ports=ports, environ=environ)
    started = time.monotonic()
    try:
        stack.up(["webhook", "worker", "aws"], timeout=120)
        print(f"own stack up in {time.monotonic() - started:.1f}s (state {state})")
        yield stack.client_env()
    finally:
        stack.down()
        shutil.rmtree(state, ignore_errors=True)


def running_stack() -> dict[str, str]:
    from client.env import load_stack_env

    load_stack_env()
    if not os.environ.get("RUNBOOK_WEBHOOK_TOKEN"):
        sys.exit("--running: set RUNBOOK_WEBHOOK_TOKEN to the token the stack's webhook has")
    return {
        "RUNBOOK_WEBHOOK_URL": os.environ.get("RUNBOOK_WEBHOOK_URL", "http://127.0.0.1:8790"),
        "TEMPORAL_ADDRESS": os.environ.get("TEMPORAL_ADDRESS", "127.0.0.1:7233"),
    }


def deliveries(
    args: argparse.Namespace, tag: str, signer: SnsSigner, token: str
) -> list[tuple[str, bytes, dict[str, str]]]:
    """(path, body, headers) for every delivery, made (and signed) before the clock starts."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    made = []
    for i in range(args.deliveries):
        instance = f"bench-{tag}-{i % args.resources:02d}"
        sns = args.source == "sns" or (args.source == "mixed" and i % 2 == 0)
        if sns:
            alarm = cloudwatch_alarm(
                ALARM,
                "ALARM",
                {"DBInstanceIdentifier": instance},
                reason="Threshold Crossed: CPU 97% >= 80%",
                changed_at=since,
            )
            made.append(("/sns", json.dumps(signer.notification(alarm)).encode(), {}))
        else:
            alert = {
                "status": "firing",
                "labels": {"alertname": ALARM, "db_instance_id": instance},
                "annotations": {"summary": "CPU 97% >= 80%"},
                "startsAt": since.isoformat(),
            }
            body = {"version": "4", "status": "firing", "alerts": [alert]}
            made.append(
                ("/alertmanager", json.dumps(body).encode(), {"Authorization": f"Bearer {token}"})
            )
    random.shuffle(made)
    return made


class Connection:
    """One kept-alive HTTP/1.1 connection: a lean client, so the load generator (one Python
    process on the same small machine) costs less than what it measures."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._streams
        head = f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\nContent-Length: {len(body)}\r\n"
        head += "Content-Type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(head.encode() + b"\r\n" + body)
        status_line, _, rest = (await reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
        length = 0
        for line in rest.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return int(status_line.split()[1]), await reader.readexactly(length)

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()


async def storm(
    url: str, made: list[tuple[str, bytes, dict[str, str]]], concurrency: int
) -> tuple[float, list[float], Counter[str]]:
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    by_action: dict[str, list[float]] = {}
    queue = iter(made)
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")

    async def worker() -> None:
        conn = Connection(host, int(port))
        try:
            for path, body, headers in queue:
                sent = time.perf_counter()
                try:
                    status, raw = await conn.post(path, body, headers)
                except (OSError, asyncio.IncompleteReadError) as err:
                    outcomes[f"transport error: {type(err).__name__}"] += 1
                    conn.close()
                    conn = Connection(host, int(port))
                    continue
                took = time.perf_counter() - sent
                latencies.append(took)
                if status != 202:
                    outcomes[f"HTTP {status}: {raw[:120].decode(errors='replace')}"] += 1
                    continue
                reply = json.loads(raw)
                for one in reply.get("alerts", [reply]):
                    outcomes[one["action"]] += 1
                    by_action.setdefault(one["action"], []).append(took)
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    took = time.perf_counter() - started
    for action, values in sorted(by_action.items()):
        p50, p99 = percentile(values, 50) * 1000, percentile(values, 99) * 1000
        print(f"  {action:<11} {len(values):>6}  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms")
    return took, latencies, outcomes


async def count_started(address: str, tag: str, expected: int) -> tuple[int, int]:
    """Runs and distinct workflow ids of this storm in visibility, once the count settles."""
    client = await Client.connect(address)
    prefix = f"db-failover/production/bench-{tag}-"
    query = f'WorkflowType = "DatabaseFailover" AND WorkflowId STARTS_WITH "{prefix}"'
    last, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = [wf.id async for wf in client.list_workflows(query)]
        if len(runs) != last:
            last, stable_since = len(runs), time.monotonic()
        elif len(runs) >= expected and time.monotonic() - stable_since > 2:
            break
        await asyncio.sleep(0.5)
    return len(runs), len(set(runs))


def percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--resources", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--source", choices=("mixed", "sns", "alertmanager"), default="mixed")
    parser.add_argument("--running", action="store_true", help="use the running local stack")
    args = parser.parse_args()

    tag = secrets.token_hex(3)
    token = os.environ.get("RUNBOOK_WEBHOOK_TOKEN") or secrets.token_urlsafe(24)
    box: dict[str, SnsSigner] = {}
    with cert_server(box) as cert_url:
        signer = box["signer"] = SnsSigner(cert_url)
        with running_stack_ctx() if args.running else own_stack(token, signer.topic_arn) as env:
            made = deliveries(args, tag, signer, token)
            print(
                f"{len(made)} deliveries ({args.source}) for {args.resources} resources, "
                f"{args.concurrency} at a time -> {env['RUNBOOK_WEBHOOK_URL']}"
            )
            took, latencies, outcomes = asyncio.run(
                storm(env["RUNBOOK_WEBHOOK_URL"], made, args.concurrency)
            )
            runs, ids = asyncio.run(count_started(env["TEMPORAL_ADDRESS"], tag, args.resources))
    print(f"requests/s        {len(made) / took:,.0f}  ({len(made)} in {took:.1f}s)")
    print(f"latency p50       {percentile(latencies, 50) * 1000:.1f} ms")
    print(f"latency p99       {percentile(latencies, 99) * 1000:.1f} ms")
    print(f"answers           {dict(outcomes.most_common())}")
    print(f"workflows started {runs} ({ids} distinct ids; expected {args.resources})")
    return 0 if runs == ids == args.resources else 1


@contextmanager
def running_stack_ctx() -> Iterator[dict[str, str]]:
    yield running_stack()


if __name__ == "__main__":
    sys.exit(main())
