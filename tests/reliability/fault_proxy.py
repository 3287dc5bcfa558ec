"""A small fault-injecting HTTP proxy for the reliability tests.

It sits between a worker and what the worker calls (moto, the service's endpoints, Slack,
PagerDuty: the worker's AWS_ENDPOINT_URL, API_BASE_URL, SLACK_WEBHOOK_URL and
PAGERDUTY_EVENTS_URL point at it) and forwards every request, unless a rule matches: then it
answers an AWS error in the request's own protocol (ThrottlingException 400, a 5xx), waits
before forwarding (a slow endpoint), or drops the connection (an endpoint that is down).
Nothing of ours is patched: the worker sees what a real throttled or failing endpoint sends.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def aws_action(self) -> str:
        """The AWS operation: JSON (X-Amz-Target), Smithy RPC v2 CBOR (path) or query (form)."""
        if target := self.headers.get("x-amz-target"):
            return target.rpartition(".")[2]
        if "/operation/" in self.path:
            return self.path.rpartition("/operation/")[2]
        for pair in self.body.split(b"&"):
            name, _, value = pair.partition(b"=")
            if name == b"Action":
                return value.decode()
        return ""


@dataclass
class Rule:
    """What to do with the requests `match` picks, the first `times` of them (None: all)."""

    name: str
    match: Callable[[Request], bool]
    action: Literal["error", "delay", "drop"]
    status: int = 500
    code: str = "InternalFailure"  # the AWS error code of an "error"
    seconds: float = 0.0  # the wait of a "delay", before forwarding
    times: int | None = None
    hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, request: Request) -> bool:
        """True when this request gets the fault (and counts it)."""
        if not self.match(request):
            return False
        with self.lock:
            if self.times is not None and self.hits >= self.times:
                return False
            self.hits += 1
            return True


def aws_error(request: Request, status: int, code: str) -> tuple[dict[str, str], bytes]:
    """An AWS error reply in the protocol of the request, so botocore reads its code."""
    message = "Rate exceeded" if "Throttl" in code else "injected by the fault proxy"
    if request.headers.get("smithy-protocol") == "rpc-v2-cbor":
        body = _cbor_map({"__type": code, "message": message})
        return {"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"}, body
    if "x-amz-target" in request.headers:
        body = f'{{"__type": "{code}", "message": "{message}"}}'.encode()
        return {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code}, body
    kind = "Receiver" if status >= 500 else "Sender"
    xml = (
        f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code>"
        f"<Message>{message}</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>"
    )
    return {"Content-Type": "text/xml"}, xml.encode()


def _cbor_map(values: dict[str, str]) -> bytes:
    """CBOR for a small map of short text strings (RFC 8949: major types 5 and 3)."""

    def text(s: str) -> bytes:
        raw = s.encode()
        assert len(raw) < 256
        return (bytes([0x60 + len(raw)]) if len(raw) < 24 else bytes([0x78, len(raw)])) + raw

    assert len(values) < 24
    return bytes([0xA0 + len(values)]) + b"".join(text(k) + text(v) for k, v in values.items())


class FaultProxy:
    """Forwards by path prefix (`routes`, the longest first; "" is the default upstream)."""

    def __init__(self, routes: dict[str, str]) -> None:
        self.routes = sorted(routes.items(), key=lambda r: -len(r[0]))
        self.rules: list[Rule] = []
        self.requests: list[tuple[Request, str]] = []  # every request and what it got
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        return rule

    def seen(self, match: Callable[[Request], bool]) -> int:
        with self._lock:
            return sum(1 for request, _ in self.requests if match(request))

    def _upstream(self, path: str) -> str:
        return next(base for prefix, base in self.routes if path.startswith(prefix))

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        request = Request(
            method=handler.command,
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=handler.rfile.read(length) if length else b"",
        )
        rule = next((r for r in self.rules if r.take(request)), None)
        with self._lock:
            self.requests.append((request, rule.name if rule else "forwarded"))
        if rule and rule.action == "drop":
            handler.close_connection = True
            return  # no answer at all: the client sees the connection closed
        if rule and rule.action == "error":
            if "AWS4-HMAC-SHA256" in request.headers.get("authorization", ""):
                headers, body = aws_error(request, rule.status, rule.code)
            else:  # Slack, PagerDuty, the service's endpoints
                headers, body = {"Content-Type": "text/plain"}, b"injected by the fault proxy"
            self._reply(handler, rule.status, headers, body)
            return
        if rule and rule.action == "delay":
            time.sleep(rule.seconds)
        status, headers, body = self._forward(request)
        self._reply(handler, status, headers, body)

    def _forward(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        upstream = urlsplit(self._upstream(request.path))
        conn = http.client.HTTPConnection(upstream.netloc, timeout=60)
        try:
            headers = {k: v for k, v in request.headers.items() if k not in HOP_BY_HOP}
            headers["host"] = upstream.netloc
            conn.request(request.method, request.path, body=request.body, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            kept = {k: v for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP}
            return resp.status, kept, body
        finally:
            conn.close()

    @staticmethod
    def _reply(
        handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        try:
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a slow endpoint beyond its timeout)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy._handle(self)

            do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass  # request lines would carry the Slack webhook's token

        return Handler
