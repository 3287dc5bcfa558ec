"""Slack's front door: the app's buttons and modals (POST /slack/interactions) and the
`/runbook` slash command (POST /slack/commands).

Every request is checked with the app's signing secret (slack-sdk's SignatureVerifier: v0
HMAC over timestamp and body, constant-time compare, at most 5 minutes old) before any of it
is read. Slack is answered at once; the work (Temporal queries, the decision's Update, a
modal, a start) runs after the answer, and what the clicker must know (a refusal and why, a
run started) comes back as an ephemeral message.

Identity: the Slack user id in a verified request names a roster person (`slack = "U..."`).
The intake signs that person's decision (or start) with its own key (RUNBOOK_INTAKE_KEY) and
the Slack user id; the worker takes it only for the person that id belongs to, and the gate
judges it as any decision: level, requester, same person twice, gate open, run running.
"""

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs

from pydantic import ValidationError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import InputBlock, PlainTextInputElement, SectionBlock
from slack_sdk.models.views import View
from slack_sdk.signature import SignatureVerifier
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.approvals import SignedDecision, load_roster, sign, slack_people
from client.decisions import SIGNATURE_VALIDITY, signed_start
from client.render import pending_row, render_status
from client.runs import query_status
from intake.alarms import Rejected
from settings import EnvironmentProfile
from workflows.gate import GatedRunbook
from workflows.models import Approval, DecisionAck, PendingGate, Rejection

log = logging.getLogger("runbook.slack")

# Slack's own payloads are a few KiB; a modal's values are bounded below.
MAX_SLACK_BODY = 64 * 1024
MAX_AGE_SECONDS = 5 * 60  # Slack's advice, and what SignatureVerifier enforces
MAX_WORKFLOW_ID = 200
APPROVE, REJECT = "runbook.approve", "runbook.reject"
HELP = (
    "`/runbook start <procedure> [P0-P3] [key=value ...]` starts a runbook as you\n"
    "`/runbook pending` lists the gates waiting for a decision\n"
    "`/runbook status <workflow-id>` shows a run\n"
    "`/runbook help` shows this"
)


@dataclass(frozen=True)
class Clicker:
    """A verified Slack user and the roster person they are."""

    user_id: str
    person: str
    channel: str  # where their ephemeral answers go


def verify_request(verifier: SignatureVerifier, body: bytes, headers: Any, now: float) -> None:
    """Slack signed this body, less than 5 minutes ago; else a 401 that says which check."""
    timestamp = headers.get("x-slack-request-timestamp", "")
    signature = headers.get("x-slack-signature", "")
    if not timestamp or not signature:
        raise Rejected(401, "missing X-Slack-Request-Timestamp or X-Slack-Signature")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > MAX_AGE_SECONDS:
        raise Rejected(401, "request timestamp is not within 5 minutes: a replay is refused")
    if not verifier.is_valid(body, timestamp, signature):
        raise Rejected(401, "Slack signature does not match the body")


def form(body: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body, one value a name."""
    try:
        fields = parse_qs(body.decode(), strict_parsing=bool(body), max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise Rejected(400, "body is not form-encoded") from None
    return {name: values[0] for name, values in fields.items()}


def interaction(body: bytes) -> dict[str, Any]:
    """The `payload` of an interaction: a JSON object with a type and a user."""
    try:
        payload = json.loads(form(body).get("payload", ""))
    except ValueError:
        raise Rejected(400, "payload: not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("user"), dict):
        raise Rejected(400, "payload: an object with `type` and `user` is required")
    return payload


def channel_id(channel: Any) -> str:
    """A payload's channel id, or "" (the answer then goes to the user's DM with the app)."""
    value = channel.get("id") if isinstance(channel, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= 32 else ""


def workflow_id_of(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_WORKFLOW_ID:
        raise Rejected(400, f"workflow id: 1 to {MAX_WORKFLOW_ID} characters required")
    return value


def update_id(workflow_id: str, run_id: str, user_id: str, click: str) -> str:
    """One click, one Update: Slack's retry of the same request (or the same modal
    submission) finds the first one's outcome instead of deciding again."""
    digest = hashlib.sha256(f"{workflow_id}\n{run_id}\n{user_id}\n{click}".encode()).hexdigest()
    return f"slack-{digest[:40]}"


class SlackFront:
    """The two endpoints, with what they need: Temporal, the roster, the intake's key and the
    bot's Web API client (ephemeral answers, modals)."""

    def __init__(
        self,
        client: Client,
        signing_secret: str,
        web: WebClient,
        roster_file: Path | None,
        intake_key: str | None,
        profile: EnvironmentProfile,
    ) -> None:
        self.client = client
        self.profile = profile  # the environment `/runbook start` starts runs in
        self.verifier = SignatureVerifier(signing_secret)
        self.web = web
        self.roster_file = roster_file
        self.intake_key = intake_key
        # Where a modal's answers go (a submission carries no channel), by view id.
        self._view_channels: OrderedDict[str, str] = OrderedDict()
        self._telling: set[asyncio.Task[None]] = set()

    # ---- the endpoints --------------------------------------------------------------------

    async def interactions(self, request: Request, body: bytes) -> Response:
        verify_request(self.verifier, body, request.headers, time.time())
        payload = interaction(body)
        kind = payload.get("type")
        if kind == "block_actions":
            actions = payload.get("actions")
            if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
                raise Rejected(400, "block_actions: `actions` is required")
            action = actions[0]
            if action.get("action_id") not in (APPROVE, REJECT):
                raise Rejected(400, f"action_id: {APPROVE} or {REJECT} expected")
            workflow_id = workflow_id_of(action.get("value"))
            who = self._clicker(payload["user"].get("id"), channel_id(payload.get("channel")))
            click = str(action.get("action_ts") or payload.get("trigger_id") or "")
            task = BackgroundTask(
                self._clicked, who, action["action_id"], workflow_id, payload, click
            )
            return Response(status_code=200, background=task)
        if kind == "view_submission":
            view = payload.get("view")
            if not isinstance(view, dict) or view.get("callback_id") not in (APPROVE, REJECT):
                raise Rejected(400, f"view.callback_id: {APPROVE} or {REJECT} expected")
            workflow_id = workflow_id_of(view.get("private_metadata"))
            channel = self._view_channels.get(str(view.get("id")), "")
            who = self._clicker(payload["user"].get("id"), channel)
            task = BackgroundTask(self._submitted, who, view, workflow_id)
            return Response(status_code=200, background=task)
        raise Rejected(400, f"type: block_actions or view_submission expected, not {kind!r}")

    async def commands(self, request: Request, body: bytes) -> Response:
        verify_request(self.verifier, body, request.headers, time.time())
        fields = form(body)
        if fields.get("command", "/runbook") != "/runbook" or "user_id" not in fields:
            raise Rejected(400, "a /runbook command with user_id is expected")
        words = fields.get("text", "").split()
        if not words or words[0] == "help":
            return JSONResponse({"response_type": "ephemeral", "text": HELP})
        who = self._clicker(fields["user_id"], channel_id({"id": fields.get("channel_id")}))
        verb, rest = words[0], words[1:]
        if verb == "start":
            task = BackgroundTask(self._start, who, rest)
        elif verb == "pending" and not rest:
            task = BackgroundTask(self._pending, who)
        elif verb == "status" and len(rest) == 1:
            task = BackgroundTask(self._status, who, workflow_id_of(rest[0]))
        else:
            return JSONResponse({"response_type": "ephemeral", "text": f"Unknown.\n{HELP}"})
        ack = {"response_type": "ephemeral", "text": f"/runbook {verb}: working on it"}
        return JSONResponse(ack, background=task)

    # ---- who clicked ----------------------------------------------------------------------

    def _clicker(self, user_id: Any, channel: str) -> Clicker:
        """The roster person of a verified Slack user; an unknown one is refused (403) and
        told so."""
        if not isinstance(user_id, str) or not user_id:
            raise Rejected(400, "user.id is required")
        person = slack_people(load_roster(self.roster_file)).get(user_id)
        if person is None:
            reason = f"Slack user {user_id[:32]} is not on the runbook roster"
            told = asyncio.create_task(self._tell(Clicker(user_id, "", channel), reason))
            self._telling.add(told)  # kept until done: the loop holds tasks weakly
            told.add_done_callback(self._telling.discard)
            raise Rejected(403, reason)
        return Clicker(user_id, person, channel or user_id)

    async def _tell(self, who: Clicker, text: str) -> None:
        """An ephemeral message to the clicker (without a channel: their DM with the app)."""
        channel = who.channel or who.user_id
        try:
            await asyncio.to_thread(
                self.web.chat_postEphemeral, channel=channel, user=who.user_id, text=text
            )
        except SlackApiError as err:
            log.warning("ephemeral to %s not sent: %s", who.user_id, err.response.get("error"))

    # ---- clicks and modals ----------------------------------------------------------------

    async def _clicked(
        self, who: Clicker, action: str, workflow_id: str, payload: dict[str, Any], click: str
    ) -> None:
        try:
            gate, _, refusal = await self._open_gate(workflow_id)
            if gate is None:
                await self._tell(who, f"Refused: {refusal}")
            elif action == REJECT:
                await self._modal(who, payload, reject_modal(workflow_id, gate))
            elif gate.params:
                await self._modal(who, payload, params_modal(workflow_id, gate))
            else:
                await self._tell(who, await self._decide(who, workflow_id, True, {}, "", click))
        except Exception:
            log.exception("click on %s by %s not handled", workflow_id, who.user_id)
            await self._tell(who, f"Your click on {workflow_id} could not be handled; try again")

    async def _submitted(self, who: Clicker, view: dict[str, Any], workflow_id: str) -> None:
        values = modal_values(view)
        click = f"view:{view.get('id')}:{view.get('hash')}"
        try:
            if view["callback_id"] == REJECT:
                reason = values.get("reason", "")
                outcome = await self._decide(who, workflow_id, False, {}, reason, click)
            else:
                outcome = await self._decide(who, workflow_id, True, values, "", click)
            await self._tell(who, outcome)
        except Exception:
            log.exception("modal for %s by %s not handled", workflow_id, who.user_id)
            await self._tell(who, f"Your decision on {workflow_id} could not be handled")

    async def _modal(self, who: Clicker, payload: dict[str, Any], view: View) -> None:
        trigger = payload.get("trigger_id")
        if not isinstance(trigger, str) or not trigger:
            await self._tell(who, "Refused: the click carried no trigger_id to open a form")
            return
        opened = await asyncio.to_thread(self.web.views_open, trigger_id=trigger, view=view)
        view_id = str((opened.get("view") or {}).get("id", ""))
        self._view_channels[view_id] = who.channel
        while len(self._view_channels) > 1000:
            self._view_channels.popitem(last=False)

    async def _open_gate(self, workflow_id: str) -> tuple[PendingGate | None, str, str]:
        """The latest run's open gate and run id, or why there is none."""
        handle = self.client.get_workflow_handle(workflow_id)
        try:
            desc = await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None, "", f"there is no run {workflow_id}"
            raise
        if desc.status != WorkflowExecutionStatus.RUNNING:
            state = desc.status.name.lower() if desc.status else "ended"
            return None, "", f"{workflow_id} has finished ({state}): there is nothing to decide"
        status = await query_status(handle)
        if status.pending_gate is None:
            return None, "", f"{workflow_id} has no approval gate open (it is {status.phase})"
        return status.pending_gate, desc.run_id, ""

    async def _decide(
        self,
        who: Clicker,
        workflow_id: str,
        approve: bool,
        params: dict[str, str],
        reason: str,
        click: str,
    ) -> str:
        """Sign the person's decision with the intake's key and send it: what to tell them."""
        if not self.intake_key:
            return "Refused: the intake has no key (RUNBOOK_INTAKE_KEY) to sign decisions with"
        gate, run_id, refusal = await self._open_gate(workflow_id)
        if gate is None:
            return f"Refused: {refusal}"
        try:
            decision = self._signed(who, run_id, workflow_id, gate, approve, params, reason)
        except ValidationError as err:
            problem = err.errors()[0]
            field = ".".join(str(p) for p in problem["loc"])
            return f"Refused: {field}: {problem['msg']}"
        run = self.client.get_workflow_handle(workflow_id, run_id=run_id)
        update = GatedRunbook.approve if approve else GatedRunbook.reject
        try:
            answer = await run.execute_update(
                update,  # type: ignore[arg-type]
                decision,
                id=update_id(workflow_id, run_id, who.user_id, click),
            )
            ack = cast(DecisionAck, answer)  # the SDK's hints say coroutine (client/decisions)
        except WorkflowUpdateFailedError as err:
            why = getattr(err.cause, "message", None) or str(err.cause or err)
            return f"Refused on {workflow_id}: {why}"
        except RPCError as err:
            if "already completed" in err.message:
                return f"Refused: {workflow_id} has finished: there is nothing to decide"
            raise
        verb = "approve" if approve else "reject"
        log.info("%s by %s (Slack %s) taken on %s", verb, who.person, who.user_id, workflow_id)
        if ack.approved:
            return f"{workflow_id}: gate {ack.gate} approved by {ack.decided_by} (via Slack)"
        if approve:
            return f"{workflow_id}: your approval counted; another person must approve too"
        return f"{workflow_id}: gate {ack.gate} rejected by {ack.decided_by} (via Slack)"

    def _signed(
        self,
        who: Clicker,
        run_id: str,
        workflow_id: str,
        gate: PendingGate,
        approve: bool,
        params: dict[str, str],
        reason: str,
    ) -> Approval | Rejection:
        assert self.intake_key
        decision = SignedDecision(
            workflow_id=workflow_id,
            run_id=run_id,
            gate=gate.gate,
            approve=approve,
            approver=who.person,
            params=params,
            expires_at=datetime.now(UTC) + SIGNATURE_VALIDITY,
            slack_user=who.user_id,
        )
        signed = {
            "approver": who.person,
            "expires_at": decision.expires_at,
            "signature": sign(decision, self.intake_key),
            "slack_user": who.user_id,
        }
        if approve:
            return Approval.model_validate({**signed, "params": params})
        return Rejection.model_validate({**signed, "reason": reason})

    # ---- the slash command ----------------------------------------------------------------

    async def _start(self, who: Clicker, words: list[str]) -> None:
        try:
            await self._tell(who, await self._started(who, words))
        except Exception:
            log.exception("/runbook start by %s not handled", who.user_id)
            await self._tell(who, "/runbook start could not be handled; try again")

    async def _started(self, who: Clicker, words: list[str]) -> str:
        from workflows.registry import PROCEDURES

        if not words or words[0] not in PROCEDURES:
            return f"Refused: name a procedure: {', '.join(sorted(PROCEDURES))}"
        procedure = PROCEDURES[words[0]]
        severity = words[1] if len(words) > 1 and words[1] in ("P0", "P1", "P2", "P3") else "P1"
        sets = words[2:] if len(words) > 1 and words[1] == severity else words[1:]
        if not self.intake_key:
            return "Refused: the intake has no key (RUNBOOK_INTAKE_KEY) to sign starts with"
        model = procedure.input_model
        values: dict[str, Any] = {
            k: v
            for k, v in self.profile.input_defaults(procedure.name).items()
            if k in model.model_fields
        }
        for pair in sets[:20]:
            name, sep, value = pair.partition("=")
            if not sep or not name:
                return f"Refused: {pair[:64]!r}: expected key=value"
            values[name] = value  # pydantic reads numbers and booleans from text
        values.update(
            severity=severity,
            requested_by=who.person,
            trigger="slack",
            environment=self.profile.name,
        )
        try:
            inp = model.model_validate(values)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()[:3]
            )
            return f"Refused: {problems}"
        inp = signed_start(procedure, inp, self.intake_key, kind="slack", slack_user=who.user_id)
        try:
            handle = await self.client.start_workflow(
                procedure.workflow_type,
                inp,
                id=procedure.workflow_id(inp),
                task_queue=self.profile.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            )
        except WorkflowAlreadyStartedError as err:
            return f"{err.workflow_id} is already running: no second run was started"
        log.info("%s started %s from Slack (%s)", who.person, handle.id, who.user_id)
        return f"Started {handle.id} as {who.person} (run {handle.result_run_id})"

    async def _pending(self, who: Clicker) -> None:
        try:
            await self._tell(who, await self._waiting())
        except Exception:
            log.exception("/runbook pending by %s not handled", who.user_id)
            await self._tell(who, "/runbook pending could not be handled; try again")

    async def _waiting(self) -> str:
        query = 'ExecutionStatus = "Running" AND RunbookGate = "waiting"'
        now, lines = datetime.now(UTC), []
        async for wf in self.client.list_workflows(query, limit=20):
            status = await query_status(self.client.get_workflow_handle(wf.id, run_id=wf.run_id))
            if status.pending_gate:
                row = pending_row(status.workflow_id, status.procedure, status.pending_gate, now)
                lines.append(
                    f"`{row['workflow_id']}` {row['severity']} {row['level']} "
                    f"waiting {row['age_seconds']}s: {row['summary']}"
                )
        return "\n".join(lines) or "No gate is waiting."

    async def _status(self, who: Clicker, workflow_id: str) -> None:
        handle = self.client.get_workflow_handle(workflow_id)
        try:
            desc = await handle.describe()
            status = await query_status(handle)
        except RPCError as err:
            log.warning("/runbook status %s: %s", workflow_id, err.message)
            await self._tell(who, f"No status for {workflow_id}: {err.message[:200]}")
            return
        state = desc.status.name if desc.status else "UNKNOWN"
        await self._tell(who, f"```{render_status(status, state)[:2800]}```")


def modal_values(view: dict[str, Any]) -> dict[str, str]:
    """A submitted modal's inputs by block id (the parameter's name, or `reason`)."""
    values = ((view.get("state") or {}).get("values")) or {}
    found: dict[str, str] = {}
    if isinstance(values, dict):
        for block_id, inputs in list(values.items())[:10]:
            entry = (inputs or {}).get("value") if isinstance(inputs, dict) else None
            if isinstance(entry, dict) and isinstance(entry.get("value"), str):
                found[str(block_id)] = entry["value"].strip()
    return found


def reject_modal(workflow_id: str, gate: PendingGate) -> View:
    reason = InputBlock(
        block_id="reason",
        label="Why not?",
        element=PlainTextInputElement(action_id="value", multiline=True, max_length=1000),
    )
    return _form(REJECT, workflow_id, gate, [reason])


def params_modal(workflow_id: str, gate: PendingGate) -> View:
    """One input a number the gate asks for, its bounds in the label, its default filled in;
    a word the gate requires (override=healthy) is typed by the approver, never filled in."""
    inputs = [
        InputBlock(
            block_id=spec.name,
            label=(
                f"{spec.name} (type {spec.word})"
                if spec.word
                else f"{spec.name} ({spec.minimum:g} to {spec.maximum:g})"
            )[:2000],
            hint=spec.help or None,
            element=PlainTextInputElement(
                action_id="value",
                initial_value=None if spec.word else f"{spec.default:g}",
                max_length=64,
            ),
        )
        for spec in gate.params
    ]
    return _form(APPROVE, workflow_id, gate, inputs)


def _form(callback_id: str, workflow_id: str, gate: PendingGate, inputs: list[InputBlock]) -> View:
    """A modal about the gate: its summary and plan, then `inputs`; submitted back to us with
    the callback id and the workflow id (private_metadata)."""
    verb = "Approve" if callback_id == APPROVE else "Reject"
    plan = "\n".join(f"• {line}" for line in gate.plan)
    about = SectionBlock(text=f"*{gate.summary}*\n{plan}"[:2900])
    return View(
        type="modal",
        callback_id=callback_id,
        private_metadata=workflow_id,
        title=f"{verb} runbook",
        submit=verb,
        close="Cancel",
        blocks=[about, *inputs],
    )
