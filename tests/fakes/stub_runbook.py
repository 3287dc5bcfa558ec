"""A procedure that stands for any other in tests of what starts procedures (the alarm
webhook, the certificate expiry check, the LLM spend watch): it keeps the alarm timeline and
runs until told to finish. The real procedures have their own tests."""

from typing import Any

from pydantic import ConfigDict, create_model
from temporalio import workflow
from temporalio.worker import UnsandboxedWorkflowRunner

from workflows.base import RunbookWorkflow
from workflows.models import RunbookInput
from workflows.registry import Procedure

# Worker options (tests.temporal_env.running) for the stub and the workflows that start it:
# no incident log (nothing records it), and unsandboxed, so those workflows see the registry
# the test patched.
STUB_WORKER: dict[str, Any] = {"interceptors": [], "workflow_runner": UnsandboxedWorkflowRunner()}


class StubInput(RunbookInput):
    """Takes the resource field of whichever procedure it stands for (and ignores it)."""

    model_config = ConfigDict(extra="ignore")


@workflow.defn(name="StubRunbook")
class StubRunbook(RunbookWorkflow):
    procedure = "stub"

    def __init__(self) -> None:
        super().__init__()
        self._done = False

    @workflow.run
    async def run(self, inp: StubInput) -> str:
        # The workflow id names the resource: <procedure>/<environment>/<resource>.
        self.begin(inp, workflow.info().workflow_id.split("/", 2)[-1])
        await workflow.wait_condition(lambda: self._done)
        return "done"

    @workflow.signal
    def finish(self) -> None:
        self._done = True


def stub_procedure(name: str, resource_field: str, default: str | None = None) -> Procedure:
    """A registry entry that starts StubRunbook for procedure `name`; its input takes the
    resource in `resource_field` (required unless a default is given)."""
    fields: dict[str, Any] = {resource_field: (str, ... if default is None else default)}
    model = create_model("StubProcedureInput", __base__=StubInput, **fields)
    return Procedure(name, StubRunbook, model, resource_field)
