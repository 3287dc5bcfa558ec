"""The Slack modals' inputs (pure): a required word is typed by the approver."""

from datetime import UTC, datetime

from intake.slack import params_modal
from workflows.db_failover import OVERRIDE
from workflows.models import PendingGate


def test_a_required_word_is_typed_by_the_approver_never_filled_in() -> None:
    now = datetime.now(UTC)
    gate = PendingGate(
        gate="failover",
        requested_at=now,
        expires_at=now,
        requested_by="alice",
        severity="P1",
        summary="A failover is not indicated",
        plan=["Reboot"],
        params=[OVERRIDE],
    )
    [_, word] = params_modal("db-failover/production/db", gate).to_dict()["blocks"]
    assert word["label"]["text"] == "override (type healthy)"
    assert "initial_value" not in word["element"]
