"""`runbook demo PROCEDURE`: inject the incident in the sandbox and run the runbook on it.
One module a procedure; what they share is in `demos/narration.py`."""

import os
from collections.abc import Awaitable, Callable

import httpx
from temporalio.client import Client

from demos.api_errors import demo_api_errors
from demos.cert_renewal import demo_cert_renewal
from demos.db_failover import demo_db_failover, demo_db_failover_via_slack
from demos.high_memory import demo_high_memory
from demos.kafka_lag import demo_kafka_lag
from demos.llm_budget import demo_llm_budget
from demos.rollback import demo_rollback
from demos.triage import demo_triage
from settings import temporal_client

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


# Decided in Slack (`runbook demo db-failover --via slack`): started by /runbook, approved by
# a button.
VIA_SLACK = {"db-failover": demo_db_failover_via_slack}


async def run_demos(names: list[str], via: str = "cli") -> bool:
    client = await temporal_client()
    chosen = VIA_SLACK if via == "slack" else DEMOS
    async with httpx.AsyncClient(base_url=os.environ["SANDBOX_URL"], timeout=10) as sandbox:
        results = [await chosen[name](client, sandbox) for name in names]
    return all(results)
