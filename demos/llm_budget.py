"""`runbook demo llm-budget`: a campaign burst spent today's LLM budget; bob approves a new
budget, one key of the config secret changes, api is redeployed and `/metrics` shows it."""

import json
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from activities.aws_access import AwsAccess
from demos.narration import approve, follow, inject, say, start, until
from settings import get_settings
from workflows.llm_budget import LlmBudgetInput
from workflows.models import RunbookResult

CONFIG_SECRET = "prod/revenue-context/config"


async def llm_gauges(sandbox: httpx.AsyncClient) -> dict[str, float]:
    text = (await sandbox.get("/metrics")).text
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("llm_budget")
    }


def print_gauges(gauges: dict[str, float]) -> None:
    print("    GET /metrics | grep llm_budget")
    for name, value in sorted(gauges.items()):
        print(f"      {name} {value:g}")


def secret_keys() -> list[str]:
    """The config secret's key names (never its values), read as the worker's diagnosis
    does (with its read role under `runbook stack up --iam`)."""
    profile = get_settings().profile()
    reader = AwsAccess(region=profile.aws_region, read_role_arn=profile.read_role_arn)
    raw = reader.client("secretsmanager").get_secret_value(SecretId=CONFIG_SECRET)
    return sorted(json.loads(raw["SecretString"]))


async def demo_llm_budget(client: Client, sandbox: httpx.AsyncClient) -> bool:
    say("Injecting the incident: a campaign burst spent today's LLM budget; calls are refused")
    await inject(sandbox, "/control/incidents/llm-budget", {})
    # The burst goes on after the fix, fast enough for the 80% alert to show in the demo.
    body: dict[str, Any] = {"calls_per_minute": 900, "cost_per_call": 0.1}
    (await sandbox.post("/control/llm", json=body)).raise_for_status()
    print_gauges(await llm_gauges(sandbox))
    keys_before = secret_keys()
    print(f"    {CONFIG_SECRET} holds {len(keys_before)} keys: {', '.join(keys_before)}")

    say("alice (on call) starts llm-budget, severity P1, watching spend every 5 s for 1 min")
    inp = LlmBudgetInput(
        requested_by="alice",
        trigger="cli",
        severity="P1",
        watch_minutes=1,
        watch_interval_seconds=5,
    )
    handle = await start("llm-budget", client, inp)
    say("Diagnosing in parallel: spend in Redis, /metrics, call rate, the secret, ECS")
    status = await until(handle, lambda s: s.pending_gate is not None)
    if status.pending_gate is None:
        print(f"    no gate opened: phase {status.phase}")
        return False
    shown = await approve(handle, status, {"daily_budget": "200"})

    say("Setting the one key, redeploying api, verifying, then watching the spend")
    result: RunbookResult = await follow(handle, shown)
    gauges = await llm_gauges(sandbox)
    keys_after = secret_keys()
    say(f"Done: {result.outcome}. {result.summary}")
    print_gauges(gauges)
    print(f"    {CONFIG_SECRET} still holds {len(keys_after)} keys: {', '.join(keys_after)}")
    return (
        result.outcome == "completed"
        and gauges.get("llm_budget_daily_usd") == 200
        and keys_after == keys_before
    )
