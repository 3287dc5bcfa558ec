"""Fail fast at start: the namespace exists and has every search attribute the runbooks set.

Without this a worker polls happily and each run fails later on its first search attribute
upsert, and `runbook pending` fails on its query. A visibility query per attribute is the
check: it works on a self-hosted cluster and on Temporal Cloud alike.
"""

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from workflows import search_attributes


class NamespaceNotReady(RuntimeError):
    """The message says what is missing and how to create it."""


async def check_namespace(client: Client) -> None:
    namespace = client.namespace
    missing = []
    for key in search_attributes.ALL:
        try:
            await client.count_workflows(f'{key.name} = "runbook-start-check"')
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise NamespaceNotReady(
                    f"Temporal namespace {namespace!r} does not exist: create it "
                    f"(temporal operator namespace create --namespace {namespace}) or set "
                    "TEMPORAL_NAMESPACE"
                ) from None
            if err.status != RPCStatusCode.INVALID_ARGUMENT:
                raise
            missing.append(key.name)
    if missing:
        create = "; ".join(
            f"temporal operator search-attribute create --namespace {namespace} "
            f"--name {name} --type Keyword"
            for name in missing
        )
        raise NamespaceNotReady(
            f"Temporal namespace {namespace!r} lacks the search attributes "
            f"{', '.join(missing)}: create them ({create})"
        )
