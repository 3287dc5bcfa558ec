"""What a worker runs, for replaying its histories: every workflow type (the procedures, the
scheduled ones and the lock) and the workflow interceptors, which add commands to histories.
The worker, the replay test and `runbook replay` all take them from here."""

from collections.abc import Sequence

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.cert_expiry_check import CertExpiryCheck
from workflows.incident_log import IncidentLogInterceptor
from workflows.input_guard import InputGuardInterceptor
from workflows.llm_spend_watch import LlmSpendWatch
from workflows.lock import ResourceLock
from workflows.registry import WORKFLOWS
from workflows.worker_mode import WorkerModeInterceptor

EVERY_WORKFLOW: list[type] = [*WORKFLOWS, LlmSpendWatch, CertExpiryCheck, ResourceLock]

# Every worker and replayer runs the same interceptors: they add commands to histories.
# The input guard first: a run with no input fails before anything else sees it; then the
# worker's own rules (its environment, shadow mode); a refused run is no incident.
INTERCEPTORS = [InputGuardInterceptor(), WorkerModeInterceptor(), IncidentLogInterceptor()]


def replayer(workflows: Sequence[type] = EVERY_WORKFLOW) -> Replayer:
    return Replayer(
        workflows=workflows, interceptors=INTERCEPTORS, data_converter=pydantic_data_converter
    )
