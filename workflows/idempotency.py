"""Provider idempotency tokens derived from the workflow, the run and the step, never random:
a retried activity (or a replayed workflow) sends the same token, so the provider does the
work once. 32 hex characters fit Secrets Manager's ClientRequestToken (32-64) and ACM's
IdempotencyToken (at most 32, `\\w+`)."""

import uuid

from temporalio import workflow


def token(step: str) -> str:
    info = workflow.info()
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{info.workflow_id}/{info.run_id}/{step}").hex
