"""`runbook postmortem`: the draft is rendered from the incident log; a file is written only
when asked, and one that exists (a person may have edited it) only with --force."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from activities import incidents
from tests.activities.test_incidents import a_record

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env(stack_env: dict[str, str]) -> dict[str, str]:
    incidents.migrate(stack_env["RUNBOOK_DATABASE_URL"])
    return {**os.environ, "RUNBOOK_DATABASE_URL": stack_env["RUNBOOK_DATABASE_URL"]}


def runbook(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_draft_goes_to_stdout_or_to_a_new_file_only(
    env: dict[str, str], tmp_path: Path
) -> None:
    record = a_record(severity="P0")
    incidents.save(env["RUNBOOK_DATABASE_URL"], record)
    prefix = record.incident_id[:13]

    shown = runbook(env, "postmortem", prefix)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("# Post-mortem (draft): db-failover on prod-revenue-context-db")

    draft = tmp_path / "pm.md"
    exported = runbook(env, "postmortem", prefix, "--out", str(draft))
    assert exported.returncode == 0, exported.stderr
    assert draft.read_text() == shown.stdout and str(draft) in exported.stderr

    draft.write_text("edited by a person")
    kept = runbook(env, "postmortem", prefix, "--out", str(draft))
    assert kept.returncode == 2 and "the file exists; --force overwrites it" in kept.stderr
    assert draft.read_text() == "edited by a person"

    forced = runbook(env, "postmortem", prefix, "--out", str(draft), "--force")
    assert forced.returncode == 0, forced.stderr
    assert draft.read_text() == shown.stdout


def test_an_unknown_id_is_bad_input_naming_it(env: dict[str, str], tmp_path: Path) -> None:
    draft = tmp_path / "never.md"
    refused = runbook(env, "postmortem", "no-such-incident", "--out", str(draft))
    assert refused.returncode == 2
    assert "INCIDENT_ID: no incident matches 'no-such-incident'" in refused.stderr
    assert not draft.exists()
