"""The signature checks the worker makes besides a decision's own (tests/workflows/test_gate.py):
who started a run (start proofs), and the approvals a mutation carries (checked again where
the action happens, against the run it belongs to)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from activities.approvals import (
    GUARDED_ACTIVITIES,
    Approved,
    Authority,
    RosterEntry,
    SignedDecision,
    authority_refusal,
    load_roster,
    sign,
    slack_people,
)
from activities.requesters import (
    RequesterClaim,
    SignedStart,
    StartProof,
    input_digest,
    judge_requester,
    sign_start,
)
from settings import Settings
from tests.fakes.approvers import key_of, write_roster
from worker import build_activities

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
INPUT = {
    "severity": "P1",
    "requested_by": "alice",
    "db_instance_id": "db-1",
    "requester_proof": None,
}
KEYS = {"alice": key_of("alice"), "bob": key_of("bob")}
INTAKE_KEY = "intake-secret"


def proof(
    requester: str = "alice",
    key: str = key_of("alice"),
    kind: str = "person",
    fields: dict[str, Any] = INPUT,
    workflow_id: str = "db-failover/db-1",
    issued: datetime = NOW,
    valid: timedelta = timedelta(minutes=10),
) -> StartProof:
    start = SignedStart(
        kind=kind,  # type: ignore[arg-type]
        requester=requester,
        workflow_type="DatabaseFailover",
        workflow_id=workflow_id,
        input_digest=input_digest(fields),
        issued_at=issued,
        expires_at=issued + valid,
    )
    return sign_start(start, key)


def claim(given: StartProof | None, requester: str = "alice", **fields: Any) -> RequesterClaim:
    values = {**INPUT, "requested_by": requester, **fields}
    return RequesterClaim(
        requester=requester,
        trigger="cli",
        workflow_type="DatabaseFailover",
        workflow_id="db-failover/db-1",
        run_id="run-2",
        run_started_at=NOW + timedelta(seconds=1),
        input_digest=input_digest(values),
        proof=given,
    )


def runs(*found: tuple[str, datetime]) -> Any:
    async def earlier(
        workflow_id: str, since: datetime, signature: str
    ) -> list[tuple[str, datetime]]:
        return [r for r in found if r[1] >= since]

    return earlier


async def judged(c: RequesterClaim, earlier: Any = None) -> tuple[bool, str]:
    verdict = await judge_requester(c, KEYS, INTAKE_KEY, earlier or runs())
    return verdict.proven, verdict.detail


async def test_a_signed_start_proves_its_requester() -> None:
    assert await judged(claim(proof())) == (True, "start signed by alice")
    # Our own run in the lookup does not count against us.
    assert (await judged(claim(proof()), runs(("run-2", NOW + timedelta(seconds=1)))))[0]


@pytest.mark.parametrize(
    ("name", "make", "why"),
    [
        ("unsigned", lambda: claim(None), "not signed"),
        ("someone else's key", lambda: claim(proof(key=key_of("bob"))), "does not match"),
        ("a name with no key", lambda: claim(proof("mallory", "k"), "mallory"), "no key"),
        ("another requester's proof", lambda: claim(proof(), requester="bob"), "does not match"),
        ("the input changed", lambda: claim(proof(), dry_run=True), "does not match"),
        ("the severity changed", lambda: claim(proof(), severity="P0"), "does not match"),
        ("for another resource", lambda: claim(proof(workflow_id="db-failover/x")), "not match"),
        ("expired", lambda: claim(proof(issued=NOW - timedelta(hours=1))), "outside"),
        ("signed long after", lambda: claim(proof(issued=NOW + timedelta(hours=1))), "outside"),
        ("valid for a day", lambda: claim(proof(valid=timedelta(days=1))), "more than"),
        (
            "intake kind for a person",
            lambda: claim(proof(kind="intake", key=INTAKE_KEY)),
            "names an alarm or schedule",
        ),
    ],
)
async def test_a_start_that_does_not_prove_its_requester(name: str, make: Any, why: str) -> None:
    proven, detail = await judged(make())
    assert not proven and why in detail, (name, detail)


async def test_a_copied_proof_proves_nothing() -> None:
    """The first run that used it started before us: we are a copy (the proof is in that run's
    input for every namespace user to read)."""
    earlier = runs(("run-1", NOW + timedelta(milliseconds=200)))
    proven, detail = await judged(claim(proof()), earlier)
    assert not proven and "already used by run run-1" in detail


async def test_the_intake_signs_for_alarms_only_and_needs_its_key() -> None:
    fields = {**INPUT, "requested_by": "alarm:db-cpu-high", "trigger": "alarm"}
    alarm = proof("alarm:db-cpu-high", INTAKE_KEY, kind="intake", fields=fields)
    good = claim(alarm, requester="alarm:db-cpu-high", trigger="alarm")
    assert await judged(good) == (True, "start signed by the intake")
    no_key = await judge_requester(good, KEYS, None, runs())
    assert not no_key.proven and "no intake key" in no_key.detail
    forged = proof("alarm:db-cpu-high", "guessed", kind="intake", fields=fields)
    assert not (await judged(claim(forged, requester="alarm:db-cpu-high", trigger="alarm")))[0]


async def test_a_hand_off_is_signed_for_the_approver_with_the_intake_key() -> None:
    """The worker signs what an approver chose to start (activities/handoffs.py): proven with
    the trigger `handoff` only, and never with a person's own key kind."""
    fields = {**INPUT, "requested_by": "bob", "trigger": "handoff"}
    signed = proof("bob", INTAKE_KEY, kind="handoff", fields=fields)
    good = claim(signed, requester="bob", trigger="handoff").model_copy(
        update={"trigger": "handoff"}
    )
    assert await judged(good) == (True, "start signed for bob's hand-off")
    as_cli = claim(signed, requester="bob", trigger="handoff")  # the claim says cli
    proven, detail = await judged(as_cli)
    assert not proven and "trigger handoff, not 'cli'" in detail
    forged = proof("bob", key_of("bob"), kind="handoff", fields=fields)
    bad = claim(forged, requester="bob", trigger="handoff").model_copy(
        update={"trigger": "handoff"}
    )
    assert not (await judged(bad))[0]


# ---- authority: the approvals a mutation acts on --------------------------------------------


def approval(
    approver: str, run_id: str = "run-1", params: dict[str, str] | None = None
) -> Approved:
    expires = NOW + timedelta(minutes=10)
    decision = SignedDecision(
        workflow_id="db-failover/db-1",
        run_id=run_id,
        gate="failover",
        approve=True,
        approver=approver,
        params=params or {},
        expires_at=expires,
    )
    return Approved(
        approver=approver,
        params=params or {},
        expires_at=expires,
        signature=sign(decision, key_of(approver)),
    )


def refusal(authority: Authority | None, run_id: str = "run-1", **tables: Any) -> str | None:
    roles = tables.get("roster", {"alice": "on-call", "bob": "on-call", "erin": "cto"})
    keys = tables.get("keys", {n: key_of(n) for n in roles})
    roster = {name: RosterEntry(role=role) for name, role in roles.items()}
    return authority_refusal(authority, "db-failover/db-1", run_id, roster, keys)


def test_approvals_given_to_the_run_authorize_its_mutations() -> None:
    both = Authority(gate="failover", approvals=[approval("bob"), approval("erin")])
    assert refusal(both) is None


def test_approvals_do_not_carry_over_to_another_run() -> None:
    """A reset run (or any copy) has another run id: the approvals it replays are refused."""
    authority = Authority(gate="failover", approvals=[approval("bob")])
    why = refusal(authority, run_id="run-2")
    assert why and "does not hold for run run-2" in why and "fresh decision" in why


def test_missing_altered_or_revoked_approvals_authorize_nothing() -> None:
    assert "no approval" in (refusal(None) or "")
    altered = approval("bob", params={"daily_budget": "5"})
    altered.params = {"daily_budget": "1000"}
    assert refusal(Authority(gate="failover", approvals=[altered]))
    other_gate = Authority(gate="scale", approvals=[approval("bob")])
    assert refusal(other_gate)
    revoked = Authority(gate="failover", approvals=[approval("bob")])
    assert refusal(revoked, keys={"bob": "rotated"})
    assert refusal(revoked, roster={"alice": "on-call"})  # bob left the roster


def test_every_mutating_activity_the_worker_runs_is_guarded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard's list names activities the worker has, and every activity whose request can
    carry approvals is on it (a new mutation without it would run unchecked)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # boto3 clients are only built
    roster, keys = write_roster(tmp_path)
    settings = Settings.model_validate(
        {"RUNBOOK_ROSTER": str(roster), "RUNBOOK_APPROVER_KEYS": str(keys)}
    )
    registered: dict[str, Any] = {}
    for fn in build_activities(None, settings, None, settings.profile()):  # type: ignore[arg-type]
        defn = getattr(fn, "__temporal_activity_definition")
        registered[defn.name] = defn
    assert set(registered) >= GUARDED_ACTIVITIES
    carrying = {
        name
        for name, defn in registered.items()
        if defn.arg_types and "authority" in getattr(defn.arg_types[0], "model_fields", {})
    }
    assert carrying == GUARDED_ACTIVITIES
    # A mutation's AWS call, once begun, is not interrupted into a botocore retry (a thread's;
    # the hand-off's start is async, awaited).
    mutating = GUARDED_ACTIVITIES | {"acm.request_certificate", "route53.upsert_record"}
    threaded = [name for name in mutating if not registered[name].is_async]
    assert "ecs.scale_service" in threaded
    assert all(registered[name].no_thread_cancel_exception for name in threaded)


# ---- Slack: decisions and starts the intake signs for a Slack user --------------------------


def test_the_roster_takes_a_role_alone_or_a_role_with_a_slack_id(tmp_path: Path) -> None:
    path = tmp_path / "roster.toml"
    path.write_text('[people]\nalice = "on-call"\nbob = { role = "on-call", slack = "U0BOB" }\n')
    roster = load_roster(path)
    assert roster["alice"] == RosterEntry(role="on-call")
    assert slack_people(roster) == {"U0BOB": "bob"}
    path.write_text('[people]\nbob = { role = "on-call", slack = "bob@example.com" }\n')
    with pytest.raises(ValueError, match=r"people\.bob"):
        load_roster(path)


def slack_approval(approver: str, slack_user: str, key: str = INTAKE_KEY) -> Approved:
    expires = NOW + timedelta(minutes=10)
    decision = SignedDecision(
        workflow_id="db-failover/db-1",
        run_id="run-1",
        gate="failover",
        approve=True,
        approver=approver,
        expires_at=expires,
        slack_user=slack_user,
    )
    return Approved(
        approver=approver, expires_at=expires, signature=sign(decision, key), slack_user=slack_user
    )


def slack_refusal(approved: Approved, intake_key: str | None = INTAKE_KEY) -> str | None:
    roster = {
        "bob": RosterEntry(role="on-call", slack="U0BOB"),
        "alice": RosterEntry(role="on-call", slack="U0ALICE"),
    }
    authority = Authority(gate="failover", approvals=[approved])
    return authority_refusal(authority, "db-failover/db-1", "run-1", roster, KEYS, intake_key)


def test_an_intake_signed_decision_holds_only_for_the_person_of_that_slack_id() -> None:
    assert slack_refusal(slack_approval("bob", "U0BOB")) is None
    # The intake's key signs for bob, but the Slack user who clicked is alice.
    assert "U0ALICE is not 'bob'" in (slack_refusal(slack_approval("bob", "U0ALICE")) or "")
    assert "does not match" in (slack_refusal(slack_approval("bob", "U0BOB", "guess")) or "")
    # bob's own key does not make a Slack decision: it is the intake's signature or nothing.
    assert slack_refusal(slack_approval("bob", "U0BOB", key_of("bob")))
    assert "no intake key" in (slack_refusal(slack_approval("bob", "U0BOB"), None) or "")


async def test_a_slack_start_proves_the_person_whose_slack_id_typed_it() -> None:
    fields = {**INPUT, "trigger": "slack"}

    def slack_proof(slack_user: str) -> StartProof:
        start = SignedStart(
            kind="slack",
            requester="alice",
            workflow_type="DatabaseFailover",
            workflow_id="db-failover/db-1",
            input_digest=input_digest(fields),
            issued_at=NOW,
            expires_at=NOW + timedelta(minutes=10),
            slack_user=slack_user,
        )
        return sign_start(start, INTAKE_KEY)

    people = {"U0ALICE": "alice", "U0BOB": "bob"}
    good = claim(slack_proof("U0ALICE"), trigger="slack")
    verdict = await judge_requester(good, KEYS, INTAKE_KEY, runs(), people)
    assert verdict.proven and "for alice (Slack U0ALICE)" in verdict.detail
    bob_typed = claim(slack_proof("U0BOB"), trigger="slack")
    verdict = await judge_requester(bob_typed, KEYS, INTAKE_KEY, runs(), people)
    assert not verdict.proven and "is not 'alice'" in verdict.detail
