"""The README walked: its commands, taken from the README itself and run as written in bash
(as a newcomer would paste them), on the embedded stack, each ending as the README says.

To stay affordable the walk shares the session's servers: its `runbook stack up` finds the
session stack's PostgreSQL, Valkey, Kafka, sandbox + moto and the dev server configured (as
external parts) and starts what is left, one worker and the webhook, in a state dir of its
own; `runbook stack down` stops those two. Scenes on different resources run at once.
"""

import asyncio
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from cli.main import build_parser
from tests.cli.readme import OPTIONAL, README, form, normal, readme_commands
from tests.conftest import free_ports, state_dir
from workflows.models import RunbookStatus

pytestmark = pytest.mark.timeout(300)
PROJECT = Path(__file__).parents[2]
DB = "db-failover/production/prod-revenue-context-db"
ROLLBACK = "rollback/production"
CERT = "cert-renewal/production/api.prod.revenue-context.com"
LLM = "llm-budget/production/prod/revenue-context/config"
TRIAGE = "triage/production/prod-revenue-context"
# Every workflow the walk starts: a run another test left open on one would be joined.
WALKED_IDS = (
    DB,
    ROLLBACK,
    CERT,
    LLM,
    TRIAGE,
    "kafka-lag/production/context_engine_group",
    "api-errors/production/api",
)

DEMO = "minutes each; `runbook demo db-failover` is walked, each procedure end to end in tests/e2e"
BENCH = "a benchmark: minutes, not a test (bench/)"
SCHEDULES = "tests/intake/test_schedules.py::test_schedules_cli runs them on the dev server"
# README commands the walk does not run, and why (each still parses, see below).
NOT_WALKED = {
    "make demo": "= make install + `runbook demo db-failover`, which is walked",
    "make test": "the suite itself",
    "make reliability": "part of the suite (tests/reliability)",
    "make bench": BENCH,
    'make bench BENCH_ARGS="--runs 10 --incidents 200 --out /tmp/bench-quick.md"': BENCH,
    ".venv/bin/python bench/diagnosis_fanout.py": BENCH,
    ".venv/bin/python bench/to_gate.py --procedure db-failover --runs 20": BENCH,
    **{
        f"runbook demo {name}": DEMO
        for name in ("kafka-lag", "api-errors", "triage", "llm-budget", "high-memory")
    },
    "runbook demo rollback": DEMO,
    "runbook demo cert-renewal": DEMO,
    "runbook schedules apply": SCHEDULES,
    "runbook schedules [--json]": SCHEDULES,
    'runbook schedules pause llm-spend-watch --note "budget review"': SCHEDULES,
    "runbook schedules resume llm-spend-watch": SCHEDULES,
    **dict.fromkeys(
        (
            "cp deploy/runbook.env.example deploy/runbook.env",
            "mkdir runbook-config && cp deploy/environments.toml runbook-config/",
            "docker compose up -d --build",
        ),
        "production images: no Docker here; tests/deploy checks the compose file and manifests",
    ),
}
# What the walk fills the README's placeholders with when it only parses a line.
PARSE_FILL = {"WORKFLOW_ID": DB, "NAME": "erin", "TEXT": "why", "INCIDENT_ID": "01a2", "etc": "x"}


# ---- the README's commands, without servers ----------------------------------------------------


def test_what_the_walk_leaves_out_is_still_in_the_readme() -> None:
    """The walk itself checks it ran every other README command (a new one fails it)."""
    assert set(NOT_WALKED) <= set(readme_commands())


def runbook_argv(fragment: str) -> list[str] | None:
    """The `runbook` arguments of a README command fragment with every option kept and
    placeholders filled (rollback.sh passes its own to `runbook start rollback`); None when
    it is not a `runbook` command."""
    line = OPTIONAL.sub(lambda m: m.group(1), normal(fragment))
    if line.split(" ", 1)[0] not in ("runbook", "./scripts/rollback.sh"):
        return None
    for name, value in PARSE_FILL.items():
        line = line.replace("..." if name == "etc" else name, value)
    command, *words = shlex.split(line)
    if command == "./scripts/rollback.sh":
        env, tag, *rest = words
        return ["start", "rollback", "--set", f"environment={env}", "--set", f"target={tag}", *rest]
    return words


def test_every_readme_runbook_command_parses_with_every_option() -> None:
    """Cheap and total: a flag or command the CLI no longer has fails here, walked or not."""
    checked = 0
    for command in readme_commands():
        for fragment in re.split(r"&&|\$\(|\)", command):
            argv = runbook_argv(fragment)
            if argv is None:
                continue
            try:
                build_parser(argv).parse_args(argv)
            except SystemExit:
                pytest.fail(f"README: {fragment.strip()!r} does not parse as {argv}")
            checked += 1
    assert checked > 30


def test_the_layout_names_every_activity_module() -> None:
    layout = README.read_text().split("## Layout", 1)[1].split("##", 1)[0]
    modules = sorted(p.stem for p in (PROJECT / "activities").glob("*.py") if p.stem != "__init__")
    assert [m for m in modules if not re.search(rf"\b{m}\b", layout)] == []


def test_form_keeps_only_the_options_asked_and_fills_placeholders() -> None:
    line = START_DB
    start = "runbook start db-failover --severity P1 --requested-by alice"
    assert form(line, "--json") == f"{start} --json"
    assert form(line, "--set db_instance_id=...", etc="db-2") == (
        f"{start} --set db_instance_id=db-2"
    )
    assert runbook_argv(line) == [
        *("start", "db-failover", "--severity", "P1", "--requested-by", "alice"),
        *("--env", "staging"),
        *("--set", "db_instance_id=x", "--dry-run", "--json"),
    ]
    with pytest.raises(AssertionError, match="no optional part"):
        form(line, "--wait")
    with pytest.raises(AssertionError, match="not a README command"):
        form("runbook start db-failover --severity P9")


# ---- the walk ---------------------------------------------------------------------------------


@dataclass
class Done:
    command: str
    code: int
    out: str
    err: str

    def ok(self, *wanted: str) -> "Done":
        assert self.code == 0, self
        for text in wanted:
            assert text in self.out, (text, self)
        return self

    def refused(self, code: int, *wanted: str) -> "Done":
        assert self.code == code, self
        for text in wanted:
            assert text in self.err, (text, self)
        return self

    def json(self) -> dict:
        return json.loads(self.out)


@dataclass
class Shell:
    """A terminal in the walk's checkout: `runbook` and `temporal` on the PATH; once the
    README sourced `.runbook/env`, later commands run with it too (the same terminal)."""

    env: dict[str, str]
    cwd: Path
    sourced: bool = False
    log: list[str] = field(default_factory=list)
    walked: set[str] = field(default_factory=set)  # the README lines run

    def readme(self, line: str, *options: str, **fill: str) -> str:
        """A README line as a command (see `form`), noted as walked."""
        self.walked.add(normal(line))
        return form(line, *options, **fill)

    def _argv(self, command: str) -> list[str]:
        if "source .runbook/env" in command:
            self.sourced = True
        elif self.sourced:
            command = f"source .runbook/env && {command}"
        self.log.append(command)
        return ["bash", "-c", command]

    async def run(self, command: str, timeout: float = 120) -> Done:
        proc = await asyncio.create_subprocess_exec(
            *self._argv(command),
            env=self.env,
            cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        return Done(command, proc.returncode or 0, out.decode(), err.decode())

    async def line(self, line: str, *options: str, **fill: str) -> Done:
        return await self.run(self.readme(line, *options, **fill))

    def background(self, line: str, *options: str, **fill: str) -> "asyncio.Task[Done]":
        return asyncio.create_task(self.line(line, *options, **fill))


async def status_when(
    client: Client, workflow_id: str, ready: Callable[[RunbookStatus], bool], timeout: float = 90
) -> RunbookStatus:
    """The run's status once `ready` holds (asked of Temporal: a CLI process a poll would
    cost a second on a busy machine). A wait with a deadline, not a speed check."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = await client.get_workflow_handle(workflow_id).query(
                "status", result_type=RunbookStatus, rpc_timeout=timedelta(seconds=5)
            )
        except RPCError:
            pass
        else:
            if ready(last):
                return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"{workflow_id}: condition never held; last status {last}")


async def demo_injected(sandbox: httpx.Client, timeout: float = 120) -> None:
    """The demo resets the sandbox, then injects its incident: the scenes on other resources
    start after that."""
    deadline = time.monotonic() + timeout
    while not sandbox.get("/control/state").json()["incidents"]["db-failover"]:
        assert time.monotonic() < deadline, "the demo never injected its incident"
        await asyncio.sleep(0.2)


def at_gate(status: RunbookStatus) -> bool:
    return status.pending_gate is not None


def ended(status: RunbookStatus) -> bool:
    return status.outcome is not None


@pytest.fixture
async def walk_env(
    dev_env: WorkflowEnvironment, stack_env: dict[str, str], sandbox: httpx.Client
) -> dict[str, str]:
    """The walk's machine: the session's servers configured as the systems to use (so its
    stack starts only the worker and the webhook), the venv on the PATH, a fresh state dir."""
    await clear_walked_runs(dev_env.client)
    home = state_dir("runbook-readme-")
    (home / "scripts").symlink_to(PROJECT / "scripts")
    system = {k: os.environ[k] for k in ("HOME", "LANG", "TZ") if k in os.environ}
    keep = (
        "DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "API_BASE_URL", "SANDBOX_URL",
        "SLACK_WEBHOOK_URL", "PAGERDUTY_EVENTS_URL", "RUNBOOK_DATABASE_URL", "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION",
        # the session sandbox's Slack twin takes the session's bot token
        "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_API_URL",
    )  # fmt: skip
    return {
        **system,
        **{k: stack_env[k] for k in keep},
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "RUNBOOK_STATE_DIR": str(home / ".runbook"),
        "RUNBOOK_PORT_WEBHOOK": str(free_ports(("webhook",))["webhook"]),
        "RUNBOOK_WALK_HOME": str(home),
    }


async def clear_walked_runs(client: Client) -> None:
    """Another test's run still open on a walked id would be joined instead of started."""
    for workflow_id in WALKED_IDS:
        handle = client.get_workflow_handle(workflow_id)
        try:
            running = (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        except RPCError:
            continue
        if running:
            await handle.terminate("the README walk needs this resource")


async def test_the_readme_walked_on_the_embedded_stack(
    walk_env: dict[str, str], dev_env: WorkflowEnvironment, sandbox: httpx.Client
) -> None:
    sh = Shell(walk_env, Path(walk_env["RUNBOOK_WALK_HOME"]))
    client = dev_env.client
    try:
        await bring_up(sh)
        demo = sh.background("runbook demo db-failover")
        await demo_injected(sandbox)
        # Read-only or on resources of their own: beside the demo.
        others = asyncio.gather(cert_scene(sh, client), diagnosis_scene(sh, client))
        (await demo).ok("demo passed", "runbook stack down", "runbook sandbox reset")
        fast_failovers(sandbox)
        # The rollback verifies /health/detailed, which the database's incident fails: the
        # database scene (a database in trouble: a healthy one needs override=healthy) after.
        await asyncio.gather(rollback_scene(sh, client), others)
        await db_failover_scene(sh, client, sandbox)
        (await sh.line("runbook demo db-failover --via slack")).ok(
            "Started db-failover/production", "Approved by bob via slack", "demo passed"
        )
        await bring_down(sh)
        assert sh.walked == set(readme_commands()) - set(NOT_WALKED), "README lines not walked"
    finally:
        await sh.run("runbook stack down")  # nothing left running, whatever failed
        print("\n".join(sh.log))


async def bring_up(sh: Shell) -> None:
    (await sh.line("runbook stack up [--iam]")).ok("stack up in")
    (await sh.line("runbook stack status [--json]")).ok("worker          up", "webhook         up")
    parts = (await sh.line("runbook stack status [--json]", "--json")).ok().json()
    assert parts["worker"]["up"] and parts["temporal"]["managed"] == "external"
    sourced = (await sh.run(sh.readme("source .runbook/env") + " && env")).ok()
    assert re.search(r"^RUNBOOK_WEBHOOK_TOKEN=\S{20,}$", sourced.out, re.M), "no local token"


def fast_failovers(sandbox: httpx.Client) -> None:
    """Sandbox settings (not README steps): a failover back at once, tasks up in 0.5 s."""
    sandbox.post("/control/heal-delay", json={"seconds": 0}).raise_for_status()
    sandbox.post("/control/ecs", json={"task_start_seconds": 0.5}).raise_for_status()


async def bring_down(sh: Shell) -> None:
    (await sh.line("runbook sandbox reset")).ok("sandbox reset")
    (await sh.line("runbook stack down")).ok("stack down")
    sh.sourced = False  # down deletes .runbook/env (a shell keeps what it sourced: sh.env)
    after = (await sh.line("runbook stack status [--json]")).refused(
        1, "worker, worker-metrics, webhook, webhook-metrics down"
    )
    assert "worker          DOWN" in after.out


START_DB = (
    "runbook start db-failover --severity P1 --requested-by alice [--env staging] "
    "[--set db_instance_id=...] [--dry-run] [--json]"
)
STATUS_DB = "runbook status db-failover/production/prod-revenue-context-db [--json] [--wait]"
TEMPORAL_START = (
    "temporal workflow start --type DatabaseFailover --task-queue runbooks "
    "--workflow-id db-failover/production/prod-revenue-context-db "
    '--input "$(runbook sign-start db-failover --as alice)"'
)


def db_in_trouble(sandbox: httpx.Client) -> None:
    """The database's incident (a failover heals it): the runs the walk approves fail over a
    database in trouble, as the README's lines do."""
    sandbox.post("/control/incidents/db-failover").raise_for_status()


async def db_failover_scene(sh: Shell, client: Client, sandbox: httpx.Client) -> None:
    """ "Using it": start, pending, approve, status; a dry run; a rejection; the incident log;
    the Temporal CLI with `runbook sign`, by Update and by signal."""
    db_in_trouble(sandbox)
    started = (await sh.line(START_DB, "--json")).ok().json()
    assert started["workflow_id"] == DB and not started["joined"]
    await status_when(client, DB, at_gate)
    joined = await sh.line(START_DB, "--dry-run")  # the README: refused, nothing changed
    joined.refused(2, "already running", "a dry run cannot join a live run")
    pending = (await sh.line("runbook pending [--json]", "--json")).ok().json()["pending"]
    assert any(row["workflow_id"] == DB for row in pending)
    (await sh.line("runbook pending [--json]")).ok(DB)
    approve = (
        "runbook approve db-failover/production/prod-revenue-context-db --as bob [--comment TEXT]"
    )
    (await sh.line(approve, "--comment TEXT", TEXT="go")).ok("approved by bob")
    done = (await sh.line(STATUS_DB, "--json", "--wait")).ok().json()
    assert (done["state"], done["outcome"], done["run_id"]) == (
        "COMPLETED", "completed", started["run_id"],
    )  # fmt: skip
    (await sh.line(STATUS_DB)).ok("outcome: completed", "reboot with force-failover")

    dry = (await sh.line(START_DB, "--dry-run", "--json")).ok().json()
    assert (await status_when(client, DB, ended)).outcome == "dry_run", dry

    (await sh.line(START_DB)).ok("started db-failover/production/prod-revenue-context-db")
    await status_when(client, DB, at_gate)
    wrong = await sh.run(f"RUNBOOK_APPROVER_KEY=not-bobs {sh.readme(approve)}")
    wrong.refused(2, "signature does not match", "check the key")
    reject = "runbook reject db-failover/production/prod-revenue-context-db --as bob --reason TEXT"
    (await sh.line(reject, TEXT="not now")).ok("rejected by bob")
    (await sh.line(STATUS_DB, "--wait")).ok("outcome: rejected")

    await incident_log(sh, started["run_id"])
    await temporal_cli(sh, client, sandbox)


async def incident_log(sh: Shell, run_id: str) -> None:
    line = "runbook incidents [--json] [--since 2026-11-01] [--procedure db-failover]"
    options = ("--json", "--since 2026-11-01", "--procedure db-failover")
    listed = (await sh.line(line, *options)).ok().json()
    [mine] = [i for i in listed["incidents"] if i["incident_id"] == run_id]
    assert (mine["outcome"], mine["approvers"], mine["trigger"]) == ("completed", ["bob"], "cli")
    (await sh.line(line)).ok("db-failover: ", "MTTA")
    (
        await sh.line(
            "runbook postmortem INCIDENT_ID [--out FILE] [--force]", INCIDENT_ID=run_id[:13]
        )
    ).ok()
    (await sh.line("runbook db migrate")).ok("incident log schema at version")


async def temporal_cli(sh: Shell, client: Client, sandbox: httpx.Client) -> None:
    """The README's Temporal CLI path: `runbook sign` as erin (her key found by the CLI)."""
    db_in_trouble(sandbox)
    (await sh.line(TEMPORAL_START)).ok("Running execution", "DatabaseFailover")
    await status_when(client, DB, at_gate)
    signed = await sh.line("runbook sign WORKFLOW_ID --as NAME", WORKFLOW_ID=DB, NAME="erin")
    assert signed.ok().json()["approver"] == "erin" and signed.json()["signature"]
    update = (
        "temporal workflow update execute --workflow-id "
        "db-failover/production/prod-revenue-context-db --name approve --input "
        '"$(runbook sign db-failover/production/prod-revenue-context-db --as erin)"'
    )
    (await sh.line(update)).ok("approved:true", "decided_by:erin")
    (await sh.line(STATUS_DB, "--wait")).ok("outcome: completed", "approved: by erin")

    db_in_trouble(sandbox)
    (await sh.line(TEMPORAL_START)).ok("Running execution")
    await status_when(client, DB, at_gate)
    signal = (
        "temporal workflow signal --workflow-id "
        "db-failover/production/prod-revenue-context-db --name approve --input "
        '"$(runbook sign db-failover/production/prod-revenue-context-db --as erin)"'
    )
    (await sh.line(signal)).ok()
    (await sh.line(STATUS_DB, "--wait")).ok("outcome: completed", "approved: by erin")


async def rollback_scene(sh: Shell, client: Client) -> None:
    """runbook.md's script, then the partial rollback: api alone, ending green."""
    inject = 'source .runbook/env && curl -s -X POST "$SANDBOX_URL/control/incidents/rollback"'
    assert "v1.5.0" in (await sh.line(inject)).ok().out
    approve = "runbook approve rollback/production --as bob"
    # Requested by alice, signed with her local key: a P0/P1 start by someone unproven (an
    # OS login with no key) would need two approvers.
    following = sh.background("./scripts/rollback.sh production v1.4.2 --requested-by alice")
    await status_when(client, ROLLBACK, at_gate)
    (await sh.line(approve)).ok("approved by bob")
    (await following).ok("outcome: completed", "/health 200 version v1.4.2")

    only_api = (
        'curl -s -X POST "$SANDBOX_URL/control/incidents/rollback" -d \'{"services": ["api"]}\''
    )
    (await sh.line(only_api)).ok()
    following = sh.background(
        "./scripts/rollback.sh production previous --requested-by alice --severity P0 "
        "--set reason=failed-smoke-tests --set services=api"
    )
    gate = (await status_when(client, ROLLBACK, at_gate)).pending_gate
    assert gate and "Warning" not in gate.summary and "api: prod-api:" in gate.summary
    (await sh.line(approve)).ok("approved by bob")
    (await following).ok("outcome: completed", "/health 200 version v1.4.2")
    await llm_budget(sh, client)  # after the rollbacks: it redeploys api too


async def llm_budget(sh: Shell, client: Client) -> None:
    start = "runbook start llm-budget --severity P1 --requested-by alice [--set watch_minutes=0]"
    (await sh.line(start, "--set watch_minutes=0")).ok("started llm-budget/")
    await status_when(client, LLM, at_gate)
    approve = (
        "runbook approve llm-budget/production/prod/revenue-context/config --as bob "
        "--set daily_budget=200"
    )
    (await sh.line(approve)).ok("approved by bob")
    done = await status_when(client, LLM, ended, timeout=120)
    assert done.outcome == "completed", done.timeline


async def cert_scene(sh: Shell, client: Client) -> None:
    inject = 'source .runbook/env && curl -s -X POST "$SANDBOX_URL/control/incidents/cert-renewal"'
    (await sh.line(inject)).ok("IMPORTED")
    start = (
        "runbook start cert-renewal --severity P2 [--set domain=api.prod.revenue-context.com] "
        "[--set load_balancers=prod-revenue-context-alb]"
    )
    (await sh.line(start, "--set load_balancers=prod-revenue-context-alb")).ok("started " + CERT)
    await status_when(client, CERT, at_gate, timeout=120)
    (
        await sh.line(
            "runbook approve cert-renewal/production/api.prod.revenue-context.com --as bob"
        )
    ).ok()
    done = await status_when(client, CERT, ended, timeout=120)
    assert done.outcome == "completed", done.timeline


async def diagnosis_scene(sh: Shell, client: Client) -> None:
    """The read-only ones, then an alarm by hand through the webhook and its token."""
    triage = (
        "runbook start triage --severity P2 && "
        "runbook status triage/production/prod-revenue-context --wait"
    )
    (await sh.line(triage)).ok("outcome: completed")
    kafka = "runbook start kafka-lag --severity P2 [--set settle_seconds=60] [--dry-run]"
    (await sh.line(kafka, "--dry-run")).ok("started kafka-lag/production/context_engine_group")
    api = (await sh.line("runbook start api-errors --severity P1")).ok(
        "started api-errors/production/api"
    )
    for workflow_id in ("kafka-lag/production/context_engine_group", "api-errors/production/api"):
        status = await status_when(client, workflow_id, lambda s: ended(s) or at_gate(s))
        if status.pending_gate:  # the sandbox happened to look unhealthy: decide it
            await client.get_workflow_handle(workflow_id).terminate("README walk done with it")
    assert api.code == 0

    routes = 'source .runbook/env && curl -s "$RUNBOOK_WEBHOOK_URL/routes"'
    listed = (await sh.line(routes)).ok().json()
    assert {"alarm": "health-check-failing", "installed": True}.items() <= {
        k: v for r in listed if r["alarm"] == "health-check-failing" for k, v in r.items()
    }.items()
    alarm = next(c for c in readme_commands() if "/alertmanager" in c)
    delivered = (await sh.line(alarm)).ok().json()
    assert "alerts" in delivered and delivered["alerts"][0]["action"] == "started", delivered
    assert delivered["workflow_ids"] == [TRIAGE]
    done = await status_when(client, TRIAGE, ended, timeout=120)
    assert done.severity == "P0" and done.outcome == "completed"
