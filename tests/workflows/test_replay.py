"""Stored histories replay under the current code: a change that would break running
workflows (non-determinism) fails here, before it reaches a worker. And the histories
themselves never change: a run recorded by a release stays the proof for that release."""

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import INTERCEPTORS
from workflows.registry import PROCEDURES, WORKFLOWS

HISTORY_DIR = Path(__file__).parent.parent / "histories"
HISTORIES = sorted(HISTORY_DIR.glob("*.json"))
# `sha256sum` lines, one a history: a new history adds its line, an old line never changes.
SUMS = HISTORY_DIR / "SHA256SUMS"


def test_histories_are_stored() -> None:
    assert HISTORIES, "tests/histories/ holds no history: capture them (see README)"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_stored_history_is_never_rewritten_or_removed() -> None:
    recorded = dict(reversed(line.split(maxsplit=1)) for line in SUMS.read_text().splitlines())
    on_disk = {path.name: sha256(path) for path in HISTORIES}
    removed = sorted(set(recorded) - set(on_disk))
    rewritten = sorted(n for n in recorded.keys() & on_disk.keys() if recorded[n] != on_disk[n])
    assert not removed, f"stored histories removed: {removed} (add new ones beside them)"
    assert not rewritten, (
        f"stored histories rewritten: {rewritten}; restore them (git checkout) and add the new "
        "run beside them under a new name, with workflow.patched where the code changed"
    )
    new = sorted(set(on_disk) - set(recorded))
    assert not new, "new histories: record them with `cd tests/histories && sha256sum " + (
        " ".join(new) + " >> SHA256SUMS`"
    )


def recorded_id(text: str, name: str) -> str:
    """The run's own workflow id: a run recorded since the input guard checks that its id
    names its resource replays only under that id. The dev server records it; a history from
    the time-skipping server does not: then the id its procedure gives its input (the only
    one such a run started under); the file's name for runs from before the check."""
    started = json.loads(text)["events"][0].get("workflowExecutionStartedEventAttributes", {})
    if started.get("workflowId"):
        return str(started["workflowId"])
    procedure = next(
        (p for p in PROCEDURES.values() if p.workflow_type == started["workflowType"]["name"]),
        None,
    )
    payloads = started.get("input", {}).get("payloads", [])
    if procedure is None or not payloads:
        return name
    inp = procedure.input_model.model_validate_json(base64.b64decode(payloads[0]["data"]))
    return procedure.workflow_id(inp)


async def stored() -> AsyncIterator[WorkflowHistory]:
    for path in HISTORIES:
        text = path.read_text()
        yield WorkflowHistory.from_json(recorded_id(text, path.stem), text)


async def test_every_stored_history_replays() -> None:
    """All in one replaying worker (a worker each costs about half a second here)."""
    replayer = Replayer(
        workflows=WORKFLOWS, interceptors=INTERCEPTORS, data_converter=pydantic_data_converter
    )
    replayed, failed = [], {}
    async with replayer.workflow_replay_iterator(stored()) as results:
        async for result in results:
            name = HISTORIES[len(replayed)].stem  # the iterator keeps the histories' order
            replayed.append(result.history.workflow_id)
            if result.replay_failure is not None:
                failed[name] = repr(result.replay_failure)
    assert not failed, f"histories that no longer replay: {failed}"
    assert len(replayed) == len(HISTORIES)
