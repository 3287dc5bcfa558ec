"""Custom search attributes the runbooks set; `runbook stack up` registers them."""

from temporalio.common import SearchAttributeKey

PROCEDURE = SearchAttributeKey.for_keyword("RunbookProcedure")
RESOURCE = SearchAttributeKey.for_keyword("RunbookResource")
SEVERITY = SearchAttributeKey.for_keyword("RunbookSeverity")
# "waiting" while a gate waits for a human, "none" otherwise.
GATE = SearchAttributeKey.for_keyword("RunbookGate")

ALL = (PROCEDURE, RESOURCE, SEVERITY, GATE)
# For `temporal server start-dev --search-attribute NAME=TYPE`.
DEV_SERVER_ARGS = [f"{key.name}=Keyword" for key in ALL]
