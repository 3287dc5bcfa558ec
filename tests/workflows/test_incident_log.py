"""The worker's interceptors end no run while one of its handlers is still at work."""

import uuid
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from worker import INTERCEPTORS

pytestmark = pytest.mark.timeout(60)


@workflow.defn(name="HandlerProbe")
class HandlerProbe:
    """Its run returns as soon as the Update arrives; the Update's handler is still awaiting
    a timer then (as an approval awaits the verification of its signature)."""

    def __init__(self) -> None:
        self._asked = False

    @workflow.run
    async def run(self, name: str) -> str:
        await workflow.wait_condition(lambda: self._asked)
        return f"{name} returned"

    @workflow.update(name="slow")
    async def slow(self) -> str:
        self._asked = True
        await workflow.sleep(timedelta(milliseconds=200))
        return "answered"


async def test_a_run_ends_after_its_handlers_finish(dev_env: WorkflowEnvironment) -> None:
    queue = f"handlers-{uuid.uuid4()}"
    async with Worker(
        dev_env.client,
        task_queue=queue,
        workflows=[HandlerProbe],
        interceptors=INTERCEPTORS,
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await dev_env.client.start_workflow(
            HandlerProbe.run, "probe", id=f"handler-probe/{uuid.uuid4()}", task_queue=queue
        )
        answer = await handle.execute_update(HandlerProbe.slow)
        result = await handle.result()
    assert (answer, result) == ("answered", "probe returned")
