"""Stored histories replay under the current code: a change that would break running
workflows (non-determinism) fails here, before it reaches a worker. And the histories
themselves never change: a run recorded by a release stays the proof for that release."""

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
from workflows.registry import WORKFLOWS

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


def id_from_input(history: WorkflowHistory) -> str | None:
    """The id a run's input gives it (workflows/registry.py), for histories whose start
    event does not keep the id (the time-skipping test server's)."""
    started = history.events[0].workflow_execution_started_event_attributes
    procedure = BY_TYPE.get(started.workflow_type.name)
    if procedure is None or not started.input.payloads:
        return None
    payload = started.input.payloads[0]
    inp = pydantic_data_converter.payload_converter.from_payload(payload, procedure.input_model)
    return procedure.workflow_id(inp)


async def stored() -> AsyncIterator[WorkflowHistory]:
    for path in HISTORIES:
        text = path.read_text()
        history = WorkflowHistory.from_json(path.stem, text)
        workflow_id = recorded_id(text) or id_from_input(history) or path.stem
        yield WorkflowHistory(workflow_id, history.events)


async def test_every_stored_history_replays() -> None:
    """All in one replaying worker (a worker each costs about half a second here), with the
    tracing interceptor a traced worker adds (telemetry.py): it adds no command, so a history
    that replays with it replays without it, and it makes no span while replaying."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    replayer = Replayer(
        workflows=WORKFLOWS,
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
