"""The run's Slack app message: the gate's approval request, updated in place as the run
moves (escalated, decided, waiting for a lock, acting, verifying, its end), with the run's
later messages in its thread.

Only when the worker posts through a Slack app (activities/slack_app.py): its answer carries
the message's ts. A webhook's message cannot be updated, so without one nothing here runs and
the run's commands are what they always were. Updates go out one at a time, the newest state
only, from a task of their own: the run never waits for Slack before it acts, and two updates
never race each other to Slack.
"""

import asyncio
from collections.abc import Awaitable, Callable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.notify import EMOJI, MessageUpdate, Notification, NotifyResult, SlackRef

PATCH = "slack-app-message"
MAX_LINES = 10
# Phases that say nothing new on the message: the gate's and the end's lines say it.
QUIET_PHASES = {"awaiting approval", "plan", "done", "failed"}
PHASE_EMOJI = {"act": ":gear:", "verify": ":mag:"}
PHASE_WORDS = {"act": "Acting", "verify": "Verifying"}

Send = Callable[[MessageUpdate], Awaitable[None]]


class SlackMessage:
    def __init__(self) -> None:
        self.ref: SlackRef | None = None
        self._note: Notification | None = None
        self._lines: list[str] = []
        self._open = False
        self._version = self._sent = 0
        self._pusher: asyncio.Task[None] | None = None

    def posted(self, note: Notification, result: NotifyResult, send: Send) -> None:
        """A gate's request was posted; through a Slack app, its message is the run's from
        now on (a later gate's request becomes the next one)."""
        if result.message is None or not workflow.patched(PATCH):
            return
        self.ref, self._note, self._open, self._lines = result.message, note, True, []
        if self._pusher is None:
            self._pusher = asyncio.create_task(self._push(send))

    def line(self, text: str) -> None:
        """One more status line on the message (the same line twice is said once)."""
        if self.ref is None or (self._lines and self._lines[-1] == text):
            return
        self._lines = [*self._lines, text][-MAX_LINES:]
        self._version += 1

    def phase(self, phase: str) -> None:
        if phase in QUIET_PHASES:
            return
        if phase.startswith("waiting for lock"):
            self.line(f":lock: W{phase[1:]}")
        else:
            words = PHASE_WORDS.get(phase, phase[:1].upper() + phase[1:])
            self.line(f"{PHASE_EMOJI.get(phase, ':arrow_forward:')} {words}")

    def escalated(self, fields: dict[str, str], text: str) -> None:
        """The gate's next level: its fields (level, who may decide, deadline) replace the
        first level's."""
        if self._note is not None:
            self._note = self._note.model_copy(update={"fields": fields})
        self.line(text)

    def decided(self, text: str) -> None:
        """The gate is decided (or timed out): the buttons go."""
        self._open = False
        self.line(text)

    def ended(self, kind: str, title: str) -> None:
        """The run's end: the headline takes its mark (resolved, failed, not run)."""
        if self.ref is None or self._note is None:
            return
        self._open = False
        self._note = self._note.model_copy(update={"kind": kind})
        # A gated run ends "resolved" only once its fix is verified: the message says so.
        verified = "Verified: " if kind == "resolved" else ""
        self.line(f"{EMOJI.get(kind, '')} {verified}{title}")

    async def settle(self) -> None:
        """Until every state so far is on Slack (or its update failed and was recorded)."""
        if self._pusher is not None:
            await workflow.wait_condition(lambda: self._sent == self._version)

    async def _push(self, send: Send) -> None:
        while True:
            await workflow.wait_condition(lambda: self._sent != self._version)
            version = self._version
            assert self.ref is not None and self._note is not None
            await send(
                MessageUpdate(ref=self.ref, note=self._note, status=self._lines, open=self._open)
            )
            self._sent = version
