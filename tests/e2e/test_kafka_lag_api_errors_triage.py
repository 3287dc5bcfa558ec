"""kafka-lag, api-errors and triage end to end on the Temporal dev server: the real worker and
activities against the sandbox's real consumers, log feed, /metrics and ECS; the CLI in its own
process. Rates are high and settle windows short (workflow inputs), so each run takes seconds."""

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tests.e2e.conftest import as_approver, cli, gate_open, replay_and_keep
from tests.temporal_env import eventually
from workflows.models import RunbookResult, Step

pytestmark = pytest.mark.timeout(180)
# 2 workers consume 100/s of the 175/s arriving, 6 would consume 300/s: whichever way a busy
# machine slows the sandbox, the lag grows until context-engine scales up, then falls.
KAFKA_INCIDENT = {
    "produce_per_second": 175,
    "per_worker_per_second": 50,
    "backlog": 1500,
    "dlq_messages": 12,
    "lag_threshold": 500,
}
FAST_LAG = ("sample_seconds=1", "settle_seconds=3", "poll_seconds=0.5", "drain_target_seconds=10")
FAST_API = ("error_window_seconds=2", "poll_seconds=0.5", "log_minutes=5")


async def start(env: dict[str, str], procedure: str, *sets: str, severity: str = "P1") -> str:
    args = [arg for value in sets for arg in ("--set", value)]
    started = await cli(  # signed with alice's key, as she would: her request, proven
        as_approver(env, "alice"),
        *("start", procedure, "--severity", severity, "--requested-by", "alice", *args, "--json"),
    )
    assert started.returncode == 0, started.stderr
    return str(json.loads(started.stdout)["workflow_id"])


async def approve(env: dict[str, str], workflow_id: str) -> None:
    """bob, a second person, approves by CLI with his own key (alice requested: P1)."""
    approved = await cli(as_approver(env, "bob"), "approve", workflow_id, "--as", "bob")
    assert approved.returncode == 0, approved.stderr


def steps_of(result: RunbookResult) -> dict[str, Step]:
    return {s.name: s for s in result.timeline}


async def shows(read: Callable[[], Any], ready: Callable[[Any], bool], what: str) -> None:
    """Poll the sandbox until a real effect shows."""
    await eventually(lambda: ready(read()), what, 60, 0.3)


def slack_texts(sandbox: httpx.Client) -> list[str]:
    return [m["text"] for m in sandbox.get("/slack/messages").json()]


def slack_message(sandbox: httpx.Client, title: str) -> str:
    """The one Slack message whose title has `title`, blocks and all, as JSON text."""
    [found] = [m for m in sandbox.get("/slack/messages").json() if title in m["text"]]
    return json.dumps(found)


async def logged(env: dict[str, str], procedure: str, workflow_id: str) -> dict[str, Any]:
    """The run's row in `runbook incidents --json --procedure ...`."""
    listed = await cli(env, "incidents", "--json", "--procedure", procedure)
    assert listed.returncode == 0, listed.stderr
    rows = [i for i in json.loads(listed.stdout)["incidents"] if i["workflow_id"] == workflow_id]
    assert rows, f"{workflow_id} is not in the incident log"
    return dict(rows[0])


async def finish(dev_env: WorkflowEnvironment, workflow_id: str, name: str) -> RunbookResult:
    """The run's result; its history replays, and is kept when capturing."""
    handle = dev_env.client.get_workflow_handle(workflow_id, result_type=RunbookResult)
    result: RunbookResult = await handle.result()
    await replay_and_keep(dev_env.client, workflow_id, name)
    return result


async def test_kafka_lag_scale_up_drains_the_lag(
    worker: dict[str, str], sandbox: httpx.Client, dev_env: WorkflowEnvironment
) -> None:
    sandbox.post("/control/incidents/kafka-lag", json=KAFKA_INCIDENT).raise_for_status()
    await shows(
        lambda: sandbox.get("/health/workers"), lambda r: r.status_code == 503, "workers failing"
    )

    workflow_id = await start(worker, "kafka-lag", *FAST_LAG)
    assert workflow_id == "kafka-lag/production/context_engine_group"
    gate = (await gate_open(dev_env.client, workflow_id)).pending_gate
    assert gate is not None and "Scale context-engine from 2 to" in gate.summary
    [param] = gate.params
    target = int(param.default or 0)
    assert param.name == "desired_count" and 2 < target <= 6  # 6 partitions
    await approve(worker, workflow_id)

    result = await finish(dev_env, workflow_id, "kafka_lag_e2e_scaled")
    assert result.outcome == "completed", result.summary
    assert f"context-engine at {target} tasks" in result.summary
    steps = steps_of(result)
    assert steps["consumer lag"].detail.startswith("failing: ")
    assert "growing" in steps["consumer lag"].detail
    dlq = steps["dlq"].detail  # the DLQ keeps what earlier injections put there
    assert re.match(r"degraded: \d+ messages in signals.raw.dlq; first 10: ", dlq), dlq
    assert "SchemaValidationError" in dlq
    assert steps["/health/workers"].detail.startswith("failing: HTTP 503")
    assert steps["scale context-engine"].outcome == "ok"
    assert steps["lag falling"].outcome == "ok"
    assert "slow queries (pg_stat_statements)" not in steps

    # The real effect: the sandbox runs `target` consumers and the lag it measures itself
    # goes on falling below the workflow's last measure.
    assert sandbox.get("/control/diagnosis").json()["running"]["context-engine"] == target
    last = int(steps["lag after 3s"].detail.split()[0])
    await shows(
        lambda: sandbox.get("/control/diagnosis").json()["kafka"]["lag"],
        lambda n: n < last,
        f"the lag below {last}",
    )

    slack = slack_texts(sandbox)
    assert "approval needed" in slack[0] and "kafka-lag" in slack[0]
    done = slack_message(sandbox, f"context-engine scaled to {target}")
    assert ":white_check_mark:" in done and "falling" in done
    assert "post-mortem draft" in slack[-1]  # P1
    row = await logged(worker, "kafka-lag", workflow_id)
    assert (row["outcome"], row["approvers"]) == ("completed", ["bob"])
    assert (row["requested_by"], row["trigger"]) == ("alice", "cli")


async def test_api_errors_scale_up_brings_the_5xx_share_down(
    worker: dict[str, str], sandbox: httpx.Client, dev_env: WorkflowEnvironment
) -> None:
    sandbox.post("/control/incidents/api-errors", json={"cause": "capacity"}).raise_for_status()
    assert sandbox.get("/control/diagnosis").json()["error_share"] > 0.05

    workflow_id = await start(worker, "api-errors", *FAST_API)
    assert workflow_id == "api-errors/production/api"
    gate = (await gate_open(dev_env.client, workflow_id)).pending_gate
    assert gate is not None and gate.summary.startswith("Scale api from 2 to 5 tasks")
    await approve(worker, workflow_id)

    result = await finish(dev_env, workflow_id, "api_errors_e2e_scaled")
    assert result.outcome == "completed", result.summary
    assert result.summary.startswith("api at 5 tasks; 5xx ")
    steps = steps_of(result)
    assert steps["5xx rate"].detail.startswith("failing: ")
    assert "Essential container in task exited" in steps["ecs api tasks"].detail
    assert steps["logs /ecs/production/api"].detail.startswith("failing: ")  # CRITICAL lines
    assert steps["circuit breakers"].detail.startswith("ok: ")
    assert steps["verify /health/detailed"].outcome == "ok"
    measures = [s for s in result.timeline if s.name.startswith("5xx rate, measure")]
    assert measures and measures[-1].outcome == "ok"

    # The real effect: 5 api tasks run and the service's 5xx share is back under 5 %.
    state = sandbox.get("/control/diagnosis").json()
    assert state["running"]["api"] == 5 and state["error_share"] < 0.05

    slack = slack_texts(sandbox)
    assert "approval needed" in slack[0] and "api-errors" in slack[0]
    done = slack_message(sandbox, "api scaled to 5")
    assert ":white_check_mark:" in done and "/health/detailed 200" in done
    row = await logged(worker, "api-errors", workflow_id)
    assert (row["outcome"], row["approvers"]) == ("completed", ["bob"])


async def test_triage_names_kafka_lag_and_changes_nothing(
    worker: dict[str, str], sandbox: httpx.Client, dev_env: WorkflowEnvironment
) -> None:
    sandbox.post("/control/incidents/kafka-lag", json=KAFKA_INCIDENT).raise_for_status()
    before = sandbox.get("/control/diagnosis").json()["running"]

    workflow_id = await start(worker, "triage", severity="P2")
    assert workflow_id == "triage/production/prod-revenue-context"
    done = await cli(worker, "status", workflow_id, "--wait", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert (status["state"], status["outcome"]) == ("COMPLETED", "completed")

    result = await finish(dev_env, workflow_id, "triage_e2e_kafka_lag")
    assert result.summary.startswith("Suggested: kafka-lag")
    # kafka-lag first; and the certificate the sandbox seeds 20 days from expiry (imported:
    # ACM will not renew it) is named too, with its domain.
    assert result.plan[0] == "runbook start kafka-lag --severity P2"
    assert [c.split()[2] for c in result.plan] == ["kafka-lag", "cert-renewal"], result.plan
    assert "--set domain=" in result.plan[1]
    steps = steps_of(result)
    assert steps["consumer lag"].detail.startswith("failing: ")
    assert steps["ecs services"].detail.startswith("ok: api 2/2 running")
    # degraded, or failing past 50 lines: the feed adds lines while the incident lasts
    assert steps["logs /ecs/production/context-engine"].detail.startswith(("degraded", "failing"))
    assert steps["logs /ecs/production/api"].detail.startswith("ok: ")
    assert steps["database connections"].outcome == "ok"

    assert sandbox.get("/control/diagnosis").json()["running"] == before  # read-only
    # The verdict, with the commands, in Slack; P2 and nothing decided: no post-mortem.
    [verdict] = slack_texts(sandbox)
    assert "triage: kafka-lag" in verdict, verdict
    posted = slack_message(sandbox, "triage: kafka-lag")
    assert f"runbook start --from {workflow_id}" in posted and result.plan[1] in posted
    row = await logged(worker, "triage", workflow_id)
    assert (row["outcome"], row["approvers"]) == ("completed", [])
