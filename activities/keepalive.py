"""Heartbeats for short mutating activities, sent from a side thread while the call runs.

A mutating activity is one or two AWS calls: it never heartbeats on its own, so when its
worker dies Temporal notices only when the start-to-close timeout runs out (30-60 s). With
`@heartbeating` and a heartbeat timeout (`workflows.base.MUTATION_HEARTBEAT`) a lost attempt
is retried within seconds, while a slow but live call keeps its full start-to-close time:
the side thread beats for as long as the activity's own thread is working.

Mutating activities are also declared `no_thread_cancel_exception=True`: when their run is
reset, terminated or cancelled mid-call, the SDK would raise a cancel exception into the
thread inside botocore's socket read, which urllib3 reports as a broken connection and
botocore's retry sends the mutation again (seen: a second RebootDBInstance). The call that
has begun finishes; its result is then simply not taken.
"""

import contextvars
import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from temporalio import activity

P = ParamSpec("P")
R = TypeVar("R")

# Temporal sends at most one heartbeat every 0.8 x the heartbeat timeout; beating more
# often than that costs nothing on the wire.
BEAT_SECONDS = 2.0


def heartbeating(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap a sync activity (under `@activity.defn`) so it heartbeats while it runs."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        done = threading.Event()

        def beat() -> None:
            while not done.wait(BEAT_SECONDS):
                try:
                    activity.heartbeat()
                except Exception:  # the activity is finishing or its worker is going away
                    return

        # The activity context is a context variable: the side thread runs in a copy of it.
        side = threading.Thread(
            target=contextvars.copy_context().run, args=(beat,), name="heartbeat", daemon=True
        )
        side.start()
        try:
            return fn(*args, **kwargs)
        finally:
            done.set()

    return wrapper
