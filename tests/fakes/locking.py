"""A minimal runbook that holds resource locks until told to let go: the lock's own tests
drive it (the procedures' use of the lock is tested with the procedures)."""

from datetime import timedelta

from pydantic import Field
from temporalio import workflow

from workflows.base import RunbookWorkflow
from workflows.lock import exclusive
from workflows.models import RunbookInput, RunbookResult


class HoldInput(RunbookInput):
    resources: list[str] = Field(min_length=1)
    lease_seconds: float = 3600


@workflow.defn(name="LockHolderProbe")
class LockHolderProbe(RunbookWorkflow):
    procedure = "lock-probe"

    def __init__(self) -> None:
        super().__init__()
        self._let_go = False

    @workflow.signal(name="let_go")
    def let_go(self) -> None:
        self._let_go = True

    @workflow.run
    async def run(self, inp: HoldInput) -> RunbookResult:
        self.begin(inp, ",".join(inp.resources))
        async with exclusive(self, inp.resources, timedelta(seconds=inp.lease_seconds)):
            self.set_phase("holding")
            await workflow.wait_condition(lambda: self._let_go)
        return self.finish("completed", "let go", [], [])
