"""`@heartbeating`: a sync activity heartbeats from a side thread while it runs, and stops
when it returns or raises."""

import threading
import time

import pytest
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from activities import keepalive
from activities.keepalive import heartbeating


@activity.defn(name="test.slow_call")
@heartbeating
def slow_call(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


@activity.defn(name="test.failing_call")
@heartbeating
def failing_call(seconds: float) -> str:
    time.sleep(seconds)
    raise ValueError("AWS said no")


def test_beats_while_the_call_runs_and_stops_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keepalive, "BEAT_SECONDS", 0.02)
    beats: list[float] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *_: beats.append(time.monotonic())
    assert env.run(slow_call, 0.3) == "done"
    assert len(beats) >= 5, beats
    with pytest.raises(ValueError, match="AWS said no"):
        env.run(failing_call, 0.1)
    after = len(beats)
    time.sleep(0.1)
    assert len(beats) == after  # no beat once the call is over
    assert not [t for t in threading.enumerate() if t.name == "heartbeat"]


def test_outside_an_activity_it_only_calls() -> None:
    assert slow_call.__wrapped__ is not None  # type: ignore[attr-defined]
    assert slow_call(0.05) == "done"  # no activity context: the side thread just stops
