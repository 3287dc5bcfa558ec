"""What the worker itself enforces on every run: the environment it serves and shadow mode.

Asked by the workflow (workflows/worker_mode.py) as a local activity, so the answer is kept
in the run's history: a run decided in shadow mode replays as a dry run on any worker.
"""

from pydantic import BaseModel
from temporalio import activity


class WorkerModeRequest(BaseModel):
    # The environment the run's input names.
    environment: str


class WorkerMode(BaseModel):
    environment: str
    read_only: bool


class WorkerModeActivities:
    def __init__(self, environment: str, read_only: bool) -> None:
        self._mode = WorkerMode(environment=environment, read_only=read_only)

    @activity.defn(name="worker.mode")
    def mode(self, req: WorkerModeRequest) -> WorkerMode:
        return self._mode
