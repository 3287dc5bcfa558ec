"""Every procedure by its CLI name: the workflow, its input model and the workflow id."""

from dataclasses import dataclass

from pydantic import BaseModel

from workflows.api_errors import ApiErrorRateSpike, ApiErrorsInput
from workflows.base import RunbookWorkflow
from workflows.cert_renewal import CertificateRenewal, CertRenewalInput
from workflows.db_failover import DatabaseFailover, DbFailoverInput
from workflows.high_memory import HighMemory, HighMemoryInput
from workflows.ids import workflow_id
from workflows.kafka_lag import KafkaConsumerLag, KafkaLagInput
from workflows.llm_budget import LlmBudgetExhaustion, LlmBudgetInput
from workflows.models import RunbookInput
from workflows.rollback import Rollback, RollbackInput
from workflows.triage import Triage, TriageInput


@dataclass(frozen=True)
class Procedure:
    name: str
    workflow: type[RunbookWorkflow]
    input_model: type[RunbookInput]
    # The input field naming the resource: one workflow per resource at a time.
    resource_field: str

    @property
    def workflow_type(self) -> str:
        defn = getattr(self.workflow, "__temporal_workflow_definition")
        return str(defn.name)

    def resource(self, inp: BaseModel) -> str:
        return str(getattr(inp, self.resource_field))

    def environment(self, inp: BaseModel) -> str:
        return str(getattr(inp, "environment", "production"))

    def id_resource(self, inp: BaseModel) -> str | None:
        """The id's last segment; None where the environment is the resource (rollback)."""
        return None if self.resource_field == "environment" else self.resource(inp)

    def workflow_id(self, inp: BaseModel) -> str:
        """`<procedure>/<environment>/<resource>` (workflows/ids.py): checked again by every run
        as it starts (workflows/input_guard.py)."""
        return workflow_id(self.name, self.environment(inp), self.id_resource(inp))


PROCEDURES: dict[str, Procedure] = {
    p.name: p
    for p in (
        Procedure("db-failover", DatabaseFailover, DbFailoverInput, "db_instance_id"),
        Procedure("llm-budget", LlmBudgetExhaustion, LlmBudgetInput, "secret_id"),
        Procedure("high-memory", HighMemory, HighMemoryInput, "service"),
        Procedure("kafka-lag", KafkaConsumerLag, KafkaLagInput, "consumer_group"),
        Procedure("api-errors", ApiErrorRateSpike, ApiErrorsInput, "service"),
        Procedure("triage", Triage, TriageInput, "cluster"),
        Procedure("rollback", Rollback, RollbackInput, "environment"),
        Procedure("cert-renewal", CertificateRenewal, CertRenewalInput, "domain"),
        # one line a procedure
    )
}

WORKFLOWS: list[type] = [p.workflow for p in PROCEDURES.values()]
