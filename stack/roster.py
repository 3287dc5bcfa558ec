"""The embedded stack's local secrets, made on first `runbook stack up`: the roster and
approver keys, the alarm intake's token and its signing key, the local Slack app's signing
secret and bot token; and where its secrets-bearing files go.

Production names its own files with RUNBOOK_ROSTER and RUNBOOK_APPROVER_KEYS and sets
RUNBOOK_INTAKE_KEY; these are for the demo and local work: four people on the runbook's
escalation path.
"""

import os
import secrets
from pathlib import Path

from activities.approvals import load_roster, load_table

LOCAL_ROSTER = {
    "alice": "on-call",
    "bob": "on-call",
    "erin": "engineering-manager",
    "carol": "cto",
}
# Their Slack user ids in the sandbox's Slack (acting as Slack: sandbox/slack_client.py).
LOCAL_SLACK_IDS = {"alice": "U0LALICE", "bob": "U0LBOB", "erin": "U0LERIN", "carol": "U0LCAROL"}


def local_roster_files(state_dir: Path) -> tuple[Path, Path]:
    return state_dir / "roster.toml", state_dir / "approver-keys.toml"


def ensure_local_roster(state_dir: Path) -> tuple[Path, Path]:
    """Write the roster and fresh random keys once; later calls keep them."""
    roster, keys = local_roster_files(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    if not roster.exists() or _without_slack_ids(roster):
        people = "".join(
            f'{name} = {{ role = "{role}", slack = "{LOCAL_SLACK_IDS[name]}" }}\n'
            for name, role in LOCAL_ROSTER.items()
        )
        roster.write_text(
            "# who may decide at an approval gate, by role; their Slack user ids\n[people]\n"
            + people
        )
    if not keys.exists():
        keys.touch(mode=0o600)
        lines = "".join(f'{name} = "{secrets.token_hex(32)}"\n' for name in LOCAL_ROSTER)
        keys.write_text(
            "# approver keys: secret; each person keeps only their own\n[keys]\n" + lines
        )
    return roster, keys


def _without_slack_ids(roster: Path) -> bool:
    """A roster this stack wrote before people had Slack ids: the same people and roles."""
    people = load_roster(roster)
    roles = {name: entry.role for name, entry in people.items()}
    return roles == LOCAL_ROSTER and not any(entry.slack for entry in people.values())


def local_key(state_dir: Path, name: str) -> str:
    return load_table(local_roster_files(state_dir)[1], "keys")[name]


def local_webhook_token(state_dir: Path) -> str:
    """The alarm intake's bearer token on the embedded stack, made once (`<state>/webhook-
    token`, 0600). The stack hands it to the webhook and writes it to `<state>/env`, so a
    local Alertmanager (or curl) can post alarms without configuring one."""
    return secret_made_once(state_dir / "webhook-token", secrets.token_urlsafe(32))


def ensure_intake_key(state_dir: Path) -> str:
    """The key the stack's webhook signs alarm starts with (and its worker checks)."""
    return secret_made_once(state_dir / "intake.key", secrets.token_hex(32))


def local_slack_app(state_dir: Path) -> dict[str, str]:
    """The local Slack app's secrets (the sandbox's Slack twin takes its bot token; requests
    acting as Slack are signed with its signing secret), made once, 0600."""
    return {
        "SLACK_SIGNING_SECRET": secret_made_once(
            state_dir / "slack-signing-secret", secrets.token_hex(16)
        ),
        "SLACK_BOT_TOKEN": secret_made_once(
            state_dir / "slack-bot-token", "xoxb-local-" + secrets.token_hex(16)
        ),
    }


def secret_made_once(path: Path, fresh: str) -> str:
    """The secret in `path` (0600), written with `fresh` by the first caller. The stack
    starts its parts in threads that may ask at once: the file appears whole (linked from a
    complete temporary file) or not at all, so nobody reads it half written."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        draft.touch(mode=0o600)
        draft.write_text(fresh + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another caller made it first: theirs stands
        finally:
            draft.unlink()
    return path.read_text().strip()


def moto_recording_file(state_dir: Path) -> Path:
    """Where moto records requests (tests count AWS calls with it): bodies hold secret values
    (PutSecretValue), so the file is the owner's alone, in a directory that is too (the state
    dir itself must stay readable by PostgreSQL's user)."""
    private = state_dir / "private"
    private.mkdir(mode=0o700, parents=True, exist_ok=True)
    private.chmod(0o700)
    path = private / "moto-recording.jsonl"
    path.touch(mode=0o600)
    path.chmod(0o600)
    return path
