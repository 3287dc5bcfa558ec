"""The worker's own rules, whatever a run's input says: shadow mode makes every run a dry
run, and a run for another environment is refused before it reads anything. The decision is
in the history: a shadow run replays as a dry run on a worker that is not in shadow mode."""

from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from tests.fakes.systems import FakeSystems
from tests.temporal_env import keep_history, running, start
from worker import INTERCEPTORS
from workflows.db_failover import DatabaseFailover, DbFailoverInput
from workflows.models import RunbookResult

pytestmark = pytest.mark.timeout(120)


async def test_shadow_mode_makes_every_run_a_dry_run(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    fakes = FakeSystems(roster, read_only=True)
    async with running(ts_env, [DatabaseFailover], fakes.activities()) as queue:
        handle = await start(ts_env, queue, DbFailoverInput(requested_by="alice", dry_run=False))
        result: RunbookResult = await handle.result()
    assert result.outcome == "dry_run" and result.summary.startswith("Dry run: Fail ")
    assert "force_failover" not in fakes.calls and not any(
        n.kind == "approval_request" for n in fakes.notes
    )
    shadow = next(s for s in result.timeline if s.name == "shadow mode")
    assert "whatever the input says" in shadow.detail
    await keep_history(handle, "db_failover_shadow_mode")

    # Replayed without shadow mode (no worker answers: the answer is in the history).
    replayer = Replayer(
        workflows=[DatabaseFailover],
        interceptors=INTERCEPTORS,
        data_converter=pydantic_data_converter,
    )
    replayed = await replayer.replay_workflow(await handle.fetch_history())
    assert replayed.replay_failure is None


async def test_a_run_for_another_environment_is_refused_before_anything_is_read(
    ts_env: WorkflowEnvironment, roster: tuple[Path, Path]
) -> None:
    fakes = FakeSystems(roster, environment="staging")
    async with running(ts_env, [DatabaseFailover], fakes.activities()) as queue:
        # environment: production (the default)
        handle = await start(ts_env, queue, DbFailoverInput(requested_by="alice"))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    message = str(failed.value.cause)
    assert "this run is for 'production'" in message and "serve 'staging'" in message
    assert "--env production" in message
    assert fakes.calls == [] and fakes.notes == [] and fakes.incidents == []
