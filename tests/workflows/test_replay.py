"""Stored histories replay under the current code: a change that would break running
workflows (non-determinism) fails here, before it reaches a worker."""

from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import INTERCEPTORS
from workflows.registry import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent.parent / "histories").glob("*.json"))


def test_histories_are_stored() -> None:
    assert HISTORIES, "tests/histories/ holds no history: capture them (see README)"


async def stored() -> AsyncIterator[WorkflowHistory]:
    for path in HISTORIES:
        yield WorkflowHistory.from_json(path.stem, path.read_text())


async def test_every_stored_history_replays() -> None:
    """All in one replaying worker (a worker each costs about half a second here)."""
    replayer = Replayer(
        workflows=WORKFLOWS, interceptors=INTERCEPTORS, data_converter=pydantic_data_converter
    )
    replayed, failed = [], {}
    async with replayer.workflow_replay_iterator(stored()) as results:
        async for result in results:
            replayed.append(result.history.workflow_id)
            if result.replay_failure is not None:
                failed[result.history.workflow_id] = repr(result.replay_failure)
    assert not failed, f"histories that no longer replay: {failed}"
    assert replayed == [path.stem for path in HISTORIES]
