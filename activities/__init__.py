"""One module a system. The worker builds each client once and injects it.

The CLI and the workflows import these modules for their models; only the worker calls the
activities. So a module imports a client library that is slow to load (boto, httpx,
psycopg, redis, the Kafka admin client, the Prometheus parser: 0.25 s together) in the
function that uses it, or for type checking only; boto errors are caught as the client's
own `exceptions.ClientError`. That keeps `runbook start` from loading what it never calls.
"""
