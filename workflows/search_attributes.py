"""Custom search attributes the runbooks set; `runbook stack up` registers them."""

from temporalio.common import SearchAttributeKey

PROCEDURE = SearchAttributeKey.for_keyword("RunbookProcedure")
RESOURCE = SearchAttributeKey.for_keyword("RunbookResource")
SEVERITY = SearchAttributeKey.for_keyword("RunbookSeverity")
# staging, production, ...: the environment the run acts in.
ENVIRONMENT = SearchAttributeKey.for_keyword("RunbookEnvironment")
# "waiting" while a gate waits for a human, "none" otherwise.
GATE = SearchAttributeKey.for_keyword("RunbookGate")
# The escalation level a waiting gate asks: "on-call", "engineering-manager", "cto".
GATE_LEVEL = SearchAttributeKey.for_keyword("RunbookGateLevel")

ALL = (PROCEDURE, RESOURCE, SEVERITY, ENVIRONMENT, GATE, GATE_LEVEL)
# For `temporal server start-dev --search-attribute NAME=TYPE`.
DEV_SERVER_ARGS = [f"{key.name}=Keyword" for key in ALL]
