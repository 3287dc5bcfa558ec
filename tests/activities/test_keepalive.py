"""`@heartbeating`: a sync activity heartbeats from a side thread while it runs, and stops
when it returns or raises."""

import threading
import time

import pytest
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from activities import keepalive
from activities.keepalive import heartbeating
from tests.temporal_env import wait_until


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
    beaten = threading.Event()

    def on_beat(*_: object) -> None:
        beats.append(time.monotonic())
        if len(beats) >= 5:
            beaten.set()

    @activity.defn(name="test.call_until_beaten")
    @heartbeating
    def call_until_beaten() -> str:
        assert beaten.wait(30), "no heartbeats while the call ran"
        return "done"

    env = ActivityEnvironment()
    env.on_heartbeat = on_beat
    assert env.run(call_until_beaten) == "done"
    with pytest.raises(ValueError, match="AWS said no"):
        env.run(failing_call, 0.1)
    # Once the call is over its side thread ends: no beat can follow.
    wait_until(lambda: not [t for t in threading.enumerate() if t.name == "heartbeat"])


def test_outside_an_activity_it_only_calls() -> None:
    assert slow_call.__wrapped__ is not None  # type: ignore[attr-defined]
    assert slow_call(0.05) == "done"  # no activity context: the side thread just stops
