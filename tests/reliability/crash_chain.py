"""A run that crashes at every crash point in turn: one worker a crash point, each killed by
SIGKILL where its `RUNBOOK_CRASH` says, the next one started to carry on. The next worker is
spawned while the current one runs, so the chain costs only what Temporal itself takes to
hand the work over (workflow task and activity timeouts)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tests.reliability.conftest import Reliability
from tests.reliability.harness import KILLED, WorkerProcess

# A crash inside a mutating activity is noticed when its heartbeat timeout runs out
# (workflows.base.MUTATION_HEARTBEAT, 10 s), then it is retried; generous on a busy machine.
CRASH_TIMEOUT = 150.0
# Workers spawned ahead of need: Python's imports take seconds on a busy machine.
AHEAD = 3


@dataclass
class CrashChain:
    rel: Reliability
    task_queue: str
    # One entry a worker: where it crashes (None: it runs until the test kills or stops it).
    plan: list[str | None]
    hit: list[str] = field(default_factory=list)
    spawned: list[WorkerProcess] = field(default_factory=list)
    released: int = 0
    ahead: int = AHEAD

    def _spawn_until(self, index: int) -> None:
        while len(self.spawned) <= min(index, len(self.plan) - 1):
            self.spawned.append(self.rel.worker(self.task_queue, self.plan[len(self.spawned)]))

    def release(self) -> WorkerProcess:
        """Let the next planned worker poll, and spawn the ones after it."""
        index = self.released
        assert index < len(self.plan), "the plan has no worker left"
        self._spawn_until(index + self.ahead)
        self.released += 1
        return self.spawned[index].go()

    async def crash_next(self, expected: str) -> None:
        """Release the next worker and wait until it dies at its crash point."""
        await self.crashed(self.release(), expected)

    async def crashed(self, worker: WorkerProcess, expected: str) -> None:
        """Wait until this released worker dies at its crash point."""
        assert worker.crash == expected, f"plan says {worker.crash}, the test expects {expected}"
        began = time.monotonic()
        status = await worker.exited(CRASH_TIMEOUT)
        print(f"crash at {expected} after {time.monotonic() - began:.1f}s")
        assert status == KILLED, f"worker for {expected} exited {status}\n{worker.tail()}"
        assert f"SIGKILL at {expected}" in worker.tail(), worker.tail()
        self.hit.append(expected)

    def planned_points(self) -> list[str]:
        return [p for p in self.plan if p]
