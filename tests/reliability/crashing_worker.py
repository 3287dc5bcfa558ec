"""`python -m tests.reliability.crashing_worker`: the real worker (`worker.main`), plus one
test-only way to die, chosen by the environment. Nothing of ours is mocked: the hooks sit
on the libraries' own extension points and end this process with SIGKILL, as a crash would.

RUNBOOK_CRASH (at most one):
  schedule:<activity type>          a step boundary: the workflow has the previous step's
                                    result and is about to schedule this activity (a
                                    workflow outbound interceptor; never while replaying)
  after-call:<service>.<Operation>  inside a mutating activity: AWS answered (botocore's
                                    `after-call` event, success only), the activity has not
                                    completed yet
  term-after-call:<service>.<Op>    the same point, but SIGTERM (a pod being stopped): the
                                    worker drains instead of dying

RUNBOOK_WORKER_GO: a file to wait for before the worker starts polling. The harness starts
the next worker while the current one still runs, so that its start-up (imports, client,
workflow validation: seconds on a busy machine) is done when the crash happens.
"""

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import boto3.session
from temporalio import workflow
from temporalio.worker import (
    Interceptor,
    StartActivityInput,
    Worker,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

import worker

CRASH_VAR = "RUNBOOK_CRASH"
GO_VAR = "RUNBOOK_WORKER_GO"


def die(where: str, detail: str = "") -> None:
    print(f"crashing_worker: SIGKILL at {where} {detail}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


class _CrashOutbound(WorkflowOutboundInterceptor):
    activity_type = ""

    def start_activity(self, input: StartActivityInput) -> Any:
        if input.activity == self.activity_type and not workflow.unsafe.is_replaying():
            die(f"schedule:{input.activity}", workflow.info().workflow_id)
        return super().start_activity(input)


class _CrashInbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_CrashOutbound(outbound))


class CrashAtSchedule(Interceptor):
    def __init__(self, activity_type: str) -> None:
        _CrashOutbound.activity_type = activity_type

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _CrashInbound


def terminate(where: str) -> None:
    print(f"crashing_worker: SIGTERM at {where}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


def crash_after_call(operation: str, end: Any = die) -> None:
    """Every boto3 session the worker makes gets the handler on its own event system."""
    event = f"after-call.{operation}"
    original = boto3.session.Session.__init__
    ended: list[bool] = []

    def handler(http_response: Any, **_: Any) -> None:
        if http_response is not None and http_response.status_code < 300 and not ended:
            ended.append(True)
            end(f"after-call:{operation}")

    def init(self: boto3.session.Session, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.events.register(event, handler)

    boto3.session.Session.__init__ = init  # type: ignore[method-assign]


def install(spec: str) -> None:
    kind, _, target = spec.partition(":")
    if kind == "schedule" and target:
        worker.INTERCEPTORS.append(CrashAtSchedule(target))  # type: ignore[arg-type]
    elif kind == "after-call" and "." in target:
        crash_after_call(target)
    elif kind == "term-after-call" and "." in target:
        crash_after_call(target, terminate)
    else:
        raise SystemExit(
            f"{CRASH_VAR}={spec!r}: expected schedule:<activity>, after-call:<op> or "
            "term-after-call:<op>"
        )


def poll_after_go() -> None:
    """The worker is built as usual; it starts polling only once the go file exists."""
    go = os.environ.get(GO_VAR)
    original = Worker.__aenter__

    async def aenter(self: Worker) -> Worker:
        while go and not Path(go).exists():
            await asyncio.sleep(0.02)
        print(f"crashing_worker: pid {os.getpid()} polls", flush=True)
        return await original(self)

    Worker.__aenter__ = aenter  # type: ignore[method-assign]


def retry_connect(timeout: float = 60) -> None:
    """A worker spawned ahead may start while the test restarts the Temporal server: it
    waits for the server (as a supervisor restarting it would) instead of exiting."""
    original = worker.temporal_client

    async def connect(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await original(*args, **kwargs)
            except RuntimeError as err:
                if "connect" not in str(err) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    worker.temporal_client = connect  # type: ignore[assignment]


def main() -> None:
    spec = os.environ.get(CRASH_VAR)
    if spec:
        install(spec)
    poll_after_go()
    retry_connect()
    print(f"crashing_worker: pid {os.getpid()}, crash at {spec or 'nothing'}", flush=True)
    asyncio.run(worker.main())


if __name__ == "__main__":
    main()
