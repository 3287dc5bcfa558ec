"""Stored histories replay under the current code: a change that would break running
workflows (non-determinism) fails here, before it reaches a worker. And the histories
themselves never change: a run recorded by a release stays the proof for that release."""

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from telemetry import client_interceptors
from worker import INTERCEPTORS
from workflows.input_guard import BY_TYPE
from workflows.replay import EVERY_WORKFLOW

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


def recorded_id(text: str) -> str:
    """The run's own workflow id: a run recorded since the input guard checks that its id
    names its resource replays only under that id."""
    started = json.loads(text)["events"][0].get("workflowExecutionStartedEventAttributes", {})
    return str(started.get("workflowId") or "")


def workflow_id(path: Path, text: str) -> str:
    """The id the run had, which a history does not keep: a run checks that its id names its
    resource (workflows/ids.py), so it is made again from the input. Runs recorded before that
    check (or of no procedure) replay under any id: the file's name."""
    started = json.loads(text)["events"][0]["workflowExecutionStartedEventAttributes"]
    procedure = BY_TYPE.get(started["workflowType"]["name"])
    if procedure is None or "input" not in started:
        return path.stem
    fields = json.loads(base64.b64decode(started["input"]["payloads"][0]["data"]))
    try:
        return procedure.workflow_id(procedure.input_model.model_validate(fields))
    except ValueError:  # an input of an older shape: recorded before the check
        return path.stem


async def stored() -> AsyncIterator[WorkflowHistory]:
    for path in HISTORIES:
        text = path.read_text()
        yield WorkflowHistory.from_json(recorded_id(text) or workflow_id(path, text), text)


async def test_every_stored_history_replays() -> None:
    """All in one replaying worker (a worker each costs about half a second here), with the
    tracing interceptor a traced worker adds (telemetry.py): it adds no command, so a history
    that replays with it replays without it, and it makes no span while replaying."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    replayer = Replayer(
        workflows=EVERY_WORKFLOW,
        interceptors=[*INTERCEPTORS, *client_interceptors(provider.get_tracer("replay"))],
        data_converter=pydantic_data_converter,
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
    assert exporter.get_finished_spans() == ()
