"""The runbook bench/lock_acquire.py runs: one lock taken as a procedure takes it, with the
worker's clock read around it (a module of its own: the workflow sandbox imports it)."""

import time
from collections.abc import Awaitable
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow

from workflows.base import RunbookWorkflow
from workflows.lock import exclusive
from workflows.models import RunbookInput


class ProbeInput(RunbookInput):
    resource: str


class Stamps(BaseModel):
    reading: float  # one clock reading's own cost (s)
    acquire: float  # asked -> granted, the reading's cost included (s)


@activity.defn(name="bench.clock")
def clock() -> float:
    return time.perf_counter()


def _read_clock() -> Awaitable[float]:
    return workflow.execute_local_activity(clock, start_to_close_timeout=timedelta(seconds=10))


@workflow.defn(name="LockAcquireProbe")
class LockAcquireProbe(RunbookWorkflow):
    procedure = "lock-bench"

    @workflow.run
    async def run(self, inp: ProbeInput) -> Stamps:
        self.begin(inp, inp.resource)
        first, second = await _read_clock(), await _read_clock()
        asked = await _read_clock()
        async with exclusive(self, [inp.resource], timedelta(minutes=5)):
            granted = await _read_clock()
        return Stamps(reading=second - first, acquire=granted - asked)
