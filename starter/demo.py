"""`runbook demo PROCEDURE`: inject the incident in the sandbox and run the runbook on it."""

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import httpx
from temporalio.client import Client

from settings import temporal_client
from starter.approvers import local_key
from starter.cli import make_signed, query_status, render_status, run_link, start_procedure
from starter.demo_cert import demo_cert_renewal
from starter.demo_diagnosis import (
    demo_api_errors,
    demo_kafka_lag,
    demo_triage,
    follow,
    print_steps,
    say,
    until,
)
from starter.demo_remediation import demo_high_memory, demo_llm_budget
from starter.demo_rollback import demo_rollback
from starter.stack_cli import load_stack_env, local_stack
from workflows.db_failover import DbFailoverInput
from workflows.registry import PROCEDURES


async def demo_db_failover(client: Client, sandbox: httpx.AsyncClient) -> bool:
    say("Resetting the sandbox and injecting the incident: the primary database is unhealthy")
    (await sandbox.post("/control/reset")).raise_for_status()
    (await sandbox.post("/control/incidents/db-failover")).raise_for_status()
    health = await sandbox.get("/health/detailed")
    print(f"    GET /health/detailed -> {health.status_code} {health.text[:160]}")

    say("alice (on call) starts the db-failover runbook, severity P1")
    inp = DbFailoverInput(requested_by="alice", trigger="cli", severity="P1", poll_seconds=2)
    handle = await start_procedure(client, PROCEDURES["db-failover"], inp)
    print(f"    workflow {handle.id}\n    {run_link(handle.id, handle.result_run_id or '')}")

    say("Diagnosing in parallel: RDS status, connections, CPU, /health/detailed")
    status = await until(handle, lambda s: s.pending_gate is not None)
    shown: set[int] = set()
    print_steps(status, shown)
    if not status.pending_gate:
        print(render_status(status, "RUNNING"))
        return False
    print(f"    plan: {status.pending_gate.summary}")
    for step in status.pending_gate.plan:
        print(f"      - {step}")

    say("bob (a second person) approves the failover")
    desc = await handle.describe()
    key = local_key(local_stack().state_dir, "bob")
    approval = make_signed(desc.id, desc.run_id, status.pending_gate.gate, "bob", key)
    print("    signed with bob's key (HMAC over workflow, run, gate, decision and expiry)")
    await handle.execute_update("approve", approval)

    say("Failing over, waiting for the new primary, verifying health and connection leaks")
    await follow(handle, shown)
    final = await query_status(handle)
    health = await sandbox.get("/health/detailed")
    say(f"Done: {final.outcome}. GET /health/detailed -> {health.status_code}")
    print(render_status(final, "COMPLETED"))
    print(run_link(handle.id, handle.result_run_id or ""))
    return final.outcome == "completed" and health.status_code == 200


DEMOS: dict[str, Callable[[Client, httpx.AsyncClient], Awaitable[bool]]] = {
    "db-failover": demo_db_failover,
    "kafka-lag": demo_kafka_lag,
    "api-errors": demo_api_errors,
    "triage": demo_triage,
    "llm-budget": demo_llm_budget,
    "high-memory": demo_high_memory,
    "rollback": demo_rollback,
    "cert-renewal": demo_cert_renewal,
}


async def run_demos(names: list[str]) -> bool:
    client = await temporal_client()
    async with httpx.AsyncClient(base_url=os.environ["SANDBOX_URL"], timeout=10) as sandbox:
        results = [await DEMOS[name](client, sandbox) for name in names]
    return all(results)


def cmd_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    say("Starting the embedded local stack (Temporal + UI, AWS, PostgreSQL, Redis, Kafka, ...)")
    stack = local_stack()
    stack.up()
    stack.write_env_file()
    load_stack_env()
    names = list(DEMOS) if args.procedure == "all" else [args.procedure]
    ok = asyncio.run(run_demos(names))
    print(f"\ndemo {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s")
    return 0 if ok else 1


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = sub.add_parser("demo", help="inject an incident in the sandbox and run its runbook")
    demo.add_argument("procedure", nargs="?", default="db-failover", choices=[*DEMOS, "all"])
    demo.set_defaults(func=cmd_demo)
