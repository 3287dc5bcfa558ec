"""The stack's local secrets: made once, whole, however many threads ask at once."""

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from activities.approvals import load_roster, slack_people
from stack.roster import (
    LOCAL_ROSTER,
    ensure_intake_key,
    ensure_local_roster,
    local_roster_files,
    local_slack_app,
    local_webhook_token,
)


def test_secrets_asked_for_at_once_are_one_whole_value(tmp_path: Path) -> None:
    # The stack's launch threads ask for the webhook token and the intake key together; a
    # reader that found the file created but not yet written got "" (the intake then said
    # "RUNBOOK_WEBHOOK_TOKEN is not set").
    for make in (local_webhook_token, ensure_intake_key):
        for attempt in range(20):
            state = tmp_path / f"{make.__name__}-{attempt}"
            with ThreadPoolExecutor(max_workers=8) as pool:
                values = set(pool.map(make, [state] * 16))
            assert len(values) == 1 and len(values.pop()) >= 32
            made = list(state.iterdir())
            assert len(made) == 1, made  # no draft left behind
            assert stat.S_IMODE(made[0].stat().st_mode) == 0o600


def test_a_secret_once_made_is_kept(tmp_path: Path) -> None:
    first = local_webhook_token(tmp_path)
    assert local_webhook_token(tmp_path) == first


def test_the_local_roster_gives_each_person_a_slack_id(tmp_path: Path) -> None:
    roster, _ = local_roster_files(tmp_path)
    roster.write_text(
        '[people]\nalice = "on-call"\nbob = "on-call"\n'
        'erin = "engineering-manager"\ncarol = "cto"\n'
    )  # written before Slack
    ensure_local_roster(tmp_path)
    people = slack_people(load_roster(roster))
    assert sorted(people.values()) == sorted(LOCAL_ROSTER)
    secrets = local_slack_app(tmp_path)
    assert secrets["SLACK_BOT_TOKEN"].startswith("xoxb-") and local_slack_app(tmp_path) == secrets
    assert stat.S_IMODE((tmp_path / "slack-signing-secret").stat().st_mode) == 0o600
