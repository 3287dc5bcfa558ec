"""Find a stack that `runbook stack up` started, whatever its ports."""

import os
import shlex
from pathlib import Path

from settings import get_settings


def load_stack_env() -> None:
    """`<state>/env` of the local stack fills in what the environment does not already say."""
    state_dir = Path(os.environ.get("RUNBOOK_STATE_DIR") or get_settings().state_dir)
    env_file = state_dir / "env"
    if not env_file.exists():
        return
    for line in env_file.read_text().splitlines():
        key, sep, value = line.removeprefix("export ").partition("=")
        if sep and key not in os.environ:
            os.environ[key] = shlex.split(value)[0] if value else ""
    get_settings.cache_clear()
