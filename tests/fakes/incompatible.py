"""A release of DatabaseFailover that cannot replay the runs of this one: it waits before it
diagnoses (a timer where the runs have activities). For `runbook replay`'s test; a module of
its own, so the workflow sandbox imports no test machinery with it."""

from temporalio import workflow

from workflows.base import RunbookWorkflow
from workflows.db_failover import DbFailoverInput


@workflow.defn(name="DatabaseFailover")
class IncompatibleFailover(RunbookWorkflow):
    @workflow.run
    async def run(self, inp: DbFailoverInput) -> None:
        await workflow.sleep(1)
