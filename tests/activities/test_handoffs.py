"""The hand-off start (activities/handoffs.py) starts only what the approvals chose: the
decision guard checks the approvals belong to the run, this checks what they name. (Its
starts, signed and joined, run against a real server in tests/workflows/test_handoffs.py.)"""

from datetime import UTC, datetime

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.approvals import Approved, Authority
from activities.handoffs import HandoffActivities, HandoffRequest


def request(chosen: list[str | None]) -> HandoffRequest:
    return HandoffRequest(
        procedure="db-failover",
        workflow_type="DatabaseFailover",
        workflow_id="db-failover/production/prod-revenue-context-db",
        input={"requested_by": "bob"},
        authority=Authority(
            gate="hand-off",
            approvals=[
                Approved(
                    approver=name,
                    params={} if choice is None else {"start": choice},
                    expires_at=datetime.now(UTC),
                    signature="s",
                )
                for name, choice in zip(("bob", "erin"), chosen, strict=False)
            ],
        ),
    )


# An approval naming no procedure takes the gate's default: the one the run asks for.
@pytest.mark.parametrize(
    "chosen", [["high-memory"], ["db-failover", "rollback"], [None, "rollback"]]
)
async def test_a_procedure_the_approvals_did_not_choose_is_never_started(
    chosen: list[str | None],
) -> None:
    handoffs = HandoffActivities(None, "queue", None)  # type: ignore[arg-type]
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(handoffs.start, request(chosen))
    assert refused.value.type == "NotChosen" and refused.value.non_retryable
    assert "'db-failover' is not what the approvals chose" in str(refused.value)
