"""Bad input, entry point by entry point: workflow inputs (as the Temporal UI or CLI would
send them), Updates and signals at a gate, the `runbook` CLI. Each gets an error naming the
field, and changes nothing: no mutating call reaches AWS (moto's recorder), the LLM config
secret keeps its value."""

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.service import RPCError

from activities.approvals import SignedDecision, sign
from tests.reliability.conftest import WORKER_ACCESS_KEY, Reliability, queue_name
from tests.reliability.harness import MotoRecorder, WorkerProcess, run_cli
from tests.temporal_env import eventually
from workflows.models import RunbookResult, RunbookStatus
from workflows.registry import PROCEDURES

pytestmark = pytest.mark.timeout(300)

MUTATIONS = {
    "RebootDBInstance",
    "UpdateService",
    "CreateService",
    "RegisterTaskDefinition",
    "PutSecretValue",
    "UpdateSecret",
    "RequestCertificate",
    "ModifyListener",
    "ChangeResourceRecordSets",
}
LLM_SECRET = "prod/revenue-context/config"
NO_INPUT = object()
MALFORMED_JSON = RawValue(Payload(metadata={"encoding": b"json/plain"}, data=b'{"severity": "P1",'))

# Every procedure's workflow refuses these, naming the field.
COMMON: list[tuple[str, Any, str]] = [
    ("unknown severity", {"severity": "P9"}, "severity"),
    ("severity of the wrong type", {"severity": 1}, "severity"),
    ("dry_run not a boolean", {"dry_run": "maybe"}, "dry_run"),
    ("empty requester", {"requested_by": ""}, "requested_by"),
    ("blank requester", {"requested_by": "   "}, "requested_by"),
    ("unknown trigger", {"trigger": "email"}, "trigger"),
    ("negative gate time", {"approval_timeout_seconds": -1}, "approval_timeout_seconds"),
    ("huge gate time", {"approval_timeout_seconds": 10**15}, "approval_timeout_seconds"),
    ("misspelt field", {"severiti": "P1"}, "severiti"),
    ("a string, not an object", "db-failover please", "Input should be an object"),
    ("a list, not an object", [1, 2], "Input should be an object"),
    ("null", None, "input: a JSON object is required"),
    ("no input at all", NO_INPUT, "input: a JSON object is required"),
    ("malformed JSON", MALFORMED_JSON, "Invalid JSON"),
]
SPECIFIC: dict[str, list[tuple[str, Any, str]]] = {
    "DatabaseFailover": [
        ("empty instance", {"db_instance_id": ""}, "db_instance_id"),
        ("instance name too long", {"db_instance_id": "x" * 64}, "db_instance_id"),
        ("zero poll", {"poll_seconds": 0}, "poll_seconds"),
        ("poll not a number", {"poll_seconds": "fast"}, "poll_seconds"),
        ("huge failover timeout", {"failover_timeout_seconds": 10**9}, "failover_timeout_seconds"),
        ("negative leak threshold", {"leak_threshold": -1}, "leak_threshold"),
    ],
    "KafkaConsumerLag": [
        ("no workers allowed", {"max_workers": 0}, "max_workers"),
        ("a million workers", {"default_workers": 10**6}, "default_workers"),
        ("empty group", {"consumer_group": ""}, "consumer_group"),
        ("negative sample", {"sample_seconds": -1}, "sample_seconds"),
        ("negative threshold", {"lag_threshold": -5}, "lag_threshold"),
    ],
    "ApiErrorRateSpike": [
        ("share above 1", {"error_rate_threshold": 1.5}, "error_rate_threshold"),
        ("negative target", {"target_count": -5}, "target_count"),
        ("huge cap", {"max_count": 10**9}, "max_count"),
    ],
    "LlmBudgetExhaustion": [
        ("no service to redeploy", {"services": []}, "services"),
        ("services not a list", {"services": 7}, "services"),
        ("negative watch", {"watch_minutes": -1}, "watch_minutes"),
        ("ratio above 1", {"alert_ratio": 2}, "alert_ratio"),
        ("empty secret id", {"secret_id": ""}, "secret_id"),
    ],
    "Triage": [
        ("no services", {"services": []}, "services"),
        ("zero check timeout", {"check_timeout_seconds": 0}, "check_timeout_seconds"),
        ("huge log window", {"log_minutes": 10**9}, "log_minutes"),
    ],
    "HighMemory": [
        ("memory below Fargate's least", {"memory": 256}, "memory"),
        ("memory not a number", {"memory": "lots"}, "memory"),
        ("huge memory", {"memory": 10**7}, "memory"),
        ("threshold above 100%", {"threshold_percent": 150}, "threshold_percent"),
        ("zero verify checks", {"verify_checks": 0}, "verify_checks"),
        ("empty service", {"service": ""}, "service"),
    ],
    "Rollback": [
        ("unknown service", {"services": ["billing"]}, "services"),
        ("no services", {"services": []}, "services"),
        ("not an image tag", {"target": "v1 .5; rm"}, "target"),
        ("unknown environment", {"environment": "moon"}, "environment"),
        ("one revision searched", {"revisions": 1}, "revisions"),
        ("huge reason", {"reason": "x" * 501}, "reason"),
    ],
    "CertificateRenewal": [
        ("not a DNS name", {"domain": "not_a.domain!"}, "domain"),
        ("bad load balancer name", {"load_balancers": ["-alb-"]}, "load_balancers"),
        ("zero days", {"days_before_expiry": 0}, "days_before_expiry"),
        ("beyond ACM's 72 h", {"issue_timeout_hours": 100}, "issue_timeout_hours"),
        ("empty listener", {"listener_arn": ""}, "listener_arn"),
        ("force not a boolean", {"force": "please"}, "force"),
    ],
}
# The shared input checks (RunbookInput, the input guard) run for every procedure through
# the same code: the later procedures get the ones that depend on the workflow's own model.
PER_MODEL = {"misspelt field", "null", "no input at all", "malformed JSON", "a list, not an object"}
LATER = {"HighMemory", "Rollback", "CertificateRenewal"}
WORKFLOW_CASES = [
    pytest.param(wf_type, value, field, id=f"{wf_type}: {name}")
    for wf_type in SPECIFIC
    for name, value, field in [
        *(c for c in COMMON if wf_type not in LATER or c[0] in PER_MODEL),
        *SPECIFIC[wf_type],
    ]
]


@dataclass
class Fixture:
    rel: Reliability
    queue: str
    client: Client
    recorder: MotoRecorder
    secret_before: str


def llm_secret(rel: Reliability) -> str:
    sm = rel.aws("secretsmanager")
    return str(sm.get_secret_value(SecretId=LLM_SECRET)["SecretString"])


@pytest.fixture(scope="module")
async def bad(reliability: Reliability) -> AsyncIterator[Fixture]:
    """One real worker for the module; afterwards: nothing was changed."""
    queue = queue_name("bad-input")
    worker: WorkerProcess = reliability.worker(queue).go()
    recorder = reliability.recorder()
    recorder.restart()
    httpx.post(f"{reliability.sandbox_url}/control/reset", timeout=10).raise_for_status()
    fixture = Fixture(
        reliability, queue, await reliability.temporal.client(), recorder, llm_secret(reliability)
    )
    yield fixture
    worker.stop()
    mutations = [c for c in recorder.calls(WORKER_ACCESS_KEY) if c.action in MUTATIONS]
    assert mutations == [], f"bad input changed something: {mutations}"
    assert llm_secret(reliability) == fixture.secret_before


@pytest.mark.parametrize(("workflow_type", "value", "field"), WORKFLOW_CASES)
async def test_workflow_input_refused_naming_the_field(
    bad: Fixture, workflow_type: str, value: Any, field: str
) -> None:
    args = [] if value is NO_INPUT else [value]
    handle = await bad.client.start_workflow(
        workflow_type,
        args=args,
        id=f"bad/{workflow_type}/{field}/{datetime.now(UTC).timestamp()}",
        task_queue=bad.queue,
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), timeout=60)
    assert field in str(failed.value.cause), failed.value.cause


@pytest.mark.parametrize(
    ("workflow_type", "value", "refusal"),
    [
        ("DatabaseFailover", {"db_instance_id": "no-such-db"}, "no RDS instance named"),
        (
            "KafkaConsumerLag",
            {"service": "no-such-service", "sample_seconds": 0, "check_timeout_seconds": 5},
            "could not be described",
        ),
        ("HighMemory", {"memory": 2500}, "is not valid on Fargate with cpu 1024"),
        ("Rollback", {"services": ["api"], "target": "v9.9.9"}, "has image tag 'v9.9.9'"),
        ("CertificateRenewal", {"domain": "shop.example.org"}, "no certificate to renew"),
    ],
    ids=[
        "db-failover: unknown instance",
        "kafka-lag: unknown service",
        "high-memory: invalid Fargate pair",
        "rollback: unknown image tag",
        "cert-renewal: domain on no listener",
    ],
)
async def test_unknown_resource_is_refused_without_acting(
    bad: Fixture, workflow_type: str, value: dict[str, Any], refusal: str
) -> None:
    procedure = next(p.name for p in PROCEDURES.values() if p.workflow_type == workflow_type)
    handle = await bad.rel.start(bad.queue, procedure, **value)
    result = await asyncio.wait_for(handle.result(), timeout=90)
    # kafka-lag cannot tell a service ECS does not know from one ECS cannot describe now: it
    # acts on nothing and escalates to Infrastructure (emailed), as runbook.md asks.
    assert result.outcome == ("escalated" if workflow_type == "KafkaConsumerLag" else "refused")
    assert refusal in json.dumps(result.model_dump(mode="json"))


# ---- Updates and signals at a waiting gate --------------------------------------------------

TEN_MINUTES = timedelta(minutes=10)


@dataclass
class Gate:
    client: Client
    workflow_id: str
    run_id: str
    keys: dict[str, str]

    def signed(
        self,
        approver: str,
        *,
        key_of: str | None = None,
        gate: str = "failover",
        approve: bool = True,
        params: dict[str, str] | None = None,
        expires_in: timedelta = TEN_MINUTES,
        reason: str = "",
    ) -> dict[str, Any]:
        decision = SignedDecision(
            workflow_id=self.workflow_id,
            run_id=self.run_id,
            gate=gate,
            approve=approve,
            approver=approver,
            params=params or {},
            expires_at=datetime.now(UTC) + expires_in,
        )
        body = decision.model_dump(mode="json", include={"approver", "expires_at"})
        body["signature"] = sign(decision, self.keys.get(key_of or approver, "not-a-key"))
        if approve:
            return {**body, "params": decision.params}
        return {**body, "reason": reason}

    async def status(self) -> RunbookStatus:
        handle = self.client.get_workflow_handle(self.workflow_id)
        return await handle.query("status", result_type=RunbookStatus)


@pytest.fixture(scope="module")
async def gate(bad: Fixture) -> Gate:
    """A db-failover run waiting at its gate, requested by alice (P1: four eyes)."""
    httpx.post(f"{bad.rel.sandbox_url}/control/reset", timeout=10).raise_for_status()
    handle = await bad.rel.start(bad.queue, "db-failover")
    found = Gate(bad.client, handle.id, handle.result_run_id or "", bad.rel.approver_keys())
    await eventually(lambda: _open(found), "the gate to open", 90)
    return found


async def _open(gate: Gate) -> bool:
    return (await gate.status()).pending_gate is not None


def update_cases(g: Gate) -> list[tuple[str, str, Any, str]]:
    """(name, update, argument, what the refusal names)."""
    expired = g.signed("bob", expires_in=timedelta(seconds=-5))
    return [
        ("empty", "approve", {}, "approver: a name is required"),
        ("unsigned", "approve", {"approver": "bob"}, "signature: a decision must be signed"),
        ("approver of the wrong type", "approve", {"approver": 5}, "approver"),
        ("not an object", "approve", "yes please", "Approval"),
        ("signed for another gate", "approve", g.signed("bob", gate="scale"), "does not match"),
        ("someone else's key", "approve", g.signed("erin", key_of="bob"), "does not match"),
        ("not on the roster", "approve", g.signed("mallory"), "not on the roster"),
        ("expired", "approve", expired, "expired"),
        ("the same signature again", "approve", expired, "already used"),
        ("expiry too far", "approve", g.signed("bob", expires_in=timedelta(hours=2)), "ahead"),
        ("unknown parameter", "approve", g.signed("bob", params={"x": "1"}), "params: x"),
        ("self-approval on P1", "approve", g.signed("alice"), "second person"),
        ("rejection without reason", "reject", g.signed("bob", approve=False), "reason"),
    ]


async def test_updates_refused_naming_the_field(bad: Fixture, gate: Gate) -> None:
    handle = gate.client.get_workflow_handle(gate.workflow_id)
    for name, update, arg, expected in update_cases(gate):
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(update, arg)
        assert expected in str(refused.value.cause), f"{name}: {refused.value.cause}"
    status = await gate.status()
    assert status.pending_gate is not None and status.pending_gate.approved_by == []


async def test_signals_refused_are_kept_in_the_status(bad: Fixture, gate: Gate) -> None:
    handle = gate.client.get_workflow_handle(gate.workflow_id)
    before = (await gate.status()).refused.count
    cases = [
        ("approve", {"approver": "bob"}, "signature"),
        ("approve", gate.signed("bob", gate="scale"), "does not match"),
        ("approve", gate.signed("alice"), "second person"),
        ("reject", gate.signed("bob", approve=False), "reason"),
        ("approve", {"approver": 5}, "approver"),
    ]
    for signal, arg, _ in cases:
        await handle.signal(signal, arg)

    async def refusals() -> list[str] | None:
        refused = (await gate.status()).refused  # a count and the last five
        return refused.last if refused.count - before >= len(cases) else None

    details = await eventually(refusals, "every refused signal in the status", 60)
    assert len(details) == len(cases), details
    for _, _, expected in cases:  # in any order: some are refused only after the worker's check
        assert any(expected in detail for detail in details), (expected, details)
    status = await gate.status()
    assert status.pending_gate is not None and status.pending_gate.approved_by == []


# ---- the CLI -------------------------------------------------------------------------------

START_CASES: list[tuple[list[str], str]] = [
    (["start", "no-such-procedure"], "invalid choice"),
    (["start", "db-failover", "--severity", "P9"], "--severity"),
    (["start", "db-failover", "--set", "poll_seconds=-1"], "poll_seconds"),
    (["start", "db-failover", "--set", "poll_seconds=fast"], "poll_seconds"),
    (["start", "db-failover", "--set", "poll_seconds"], "expected key=value"),
    (["start", "db-failover", "--set", "=1"], "expected key=value"),
    (["start", "db-failover", "--set", "db_instance=x"], "db_instance"),
    (["start", "db-failover", "--set", "approval_timeout_seconds=99999999999"], "approval_timeout"),
    (["start", "db-failover", "--requested-by", " "], "requested_by"),
    (["start", "kafka-lag", "--set", "max_workers=0"], "max_workers"),
    (["start", "api-errors", "--set", "error_rate_threshold=2"], "error_rate_threshold"),
    (["start", "llm-budget", "--set", "watch_minutes=-5"], "watch_minutes"),
    (["start", "triage", "--set", "services=[]"], "services"),
    (["start", "high-memory", "--set", "memory=100"], "memory"),
    (["start", "rollback", "--set", "target=v1 .5"], "target"),
    (["start", "cert-renewal", "--set", "domain=not_a.domain!"], "domain"),
    (["status", "db-failover/no-such-db"], "no workflow with id"),
    (["approve", "db-failover/no-such-db", "--as", "bob"], "no workflow with id"),
    (["reject", "db-failover/no-such-db", "--as", "bob"], "--reason"),
    (["approve", "db-failover/x", "--as", "bob", "--set", "oops"], "expected key=value"),
]


async def test_cli_refuses_bad_input_with_exit_2_and_starts_nothing(
    bad: Fixture, gate: Gate
) -> None:
    rel = bad.rel
    before = (await bad.client.count_workflows()).count
    approver = rel.cli_env(bad.queue, approver="bob")
    at_gate = ["approve", gate.workflow_id, "--as", "bob"]
    cases = [
        *((approver, args, wanted) for args, wanted in START_CASES),
        # No key to sign with: the embedded stack's keys file has none for dave.
        (rel.cli_env(bad.queue), [*at_gate[:-1], "dave"], "RUNBOOK_APPROVER_KEY"),
        (approver, [*at_gate, "--set", "x=1"], "params: x"),
    ]
    results = await asyncio.gather(*(run_cli(env, rel.transcript, *args) for env, args, _ in cases))
    for (_, args, wanted), result in zip(cases, results, strict=True):
        assert result.returncode == 2 and wanted in result.stderr, (args, result.stderr)
    assert (await bad.client.count_workflows()).count == before


async def test_decisions_on_a_closed_gate_are_refused(bad: Fixture, gate: Gate) -> None:
    rel = bad.rel
    bob = rel.cli_env(bad.queue, approver="bob")
    rejected = await run_cli(
        bob, rel.transcript, "reject", gate.workflow_id, "--as", "bob", "--reason", "test"
    )
    assert rejected.returncode == 0, rejected.stderr
    handle = bad.client.get_workflow_handle(gate.workflow_id, result_type=RunbookResult)
    assert (await handle.result()).outcome == "rejected"
    again = await run_cli(bob, rel.transcript, "approve", gate.workflow_id, "--as", "bob")
    assert again.returncode == 2 and "no approval gate is open" in again.stderr, again.stderr
    with pytest.raises(RPCError, match="completed"):
        await handle.signal("approve", gate.signed("erin"))
    with pytest.raises(RPCError, match="not found"):
        await bad.client.get_workflow_handle("db-failover/no-such-run").signal("approve", {})
