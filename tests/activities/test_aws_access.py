"""Which credentials an AWS call uses (activities/aws_access.py), against the session's moto:
reads with the read role; a mutation with the procedure's role, assumed for that activity
under a session name carrying the workflow id; nothing at all in shadow mode. (Policies
enforced: tests/e2e/test_iam.py.)"""

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws_access import SESSION_NAME_MAX, AwsAccess, session_name

ROLES = "arn:aws:iam::123456789012:role/runbook-"
WORKFLOW_ID = "db-failover/production/prod-revenue-context-db"


def in_activity(fn: Callable[[], Any], workflow_type: str, workflow_id: str = WORKFLOW_ID) -> Any:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_type=workflow_type, workflow_id=workflow_id)
    return env.run(fn)


def test_a_session_name_is_the_workflow_id_in_sts_alphabet_and_length() -> None:
    assert session_name(WORKFLOW_ID) == "db-failover.production.prod-revenue-context-db"
    assert session_name("llm-budget/production/prod/revenue-context/config") == (
        "llm-budget.production.prod.revenue-context.config"
    )
    assert session_name("x/a b#c") == "x.a-b-c"
    long_a = "cert-renewal/production/" + "a" * 60 + ".example.com"
    long_b = "cert-renewal/production/" + "a" * 60 + ".example.org"
    name_a, name_b = session_name(long_a), session_name(long_b)
    assert len(name_a) == len(name_b) == SESSION_NAME_MAX
    assert name_a.startswith("cert-renewal.production.aaa") and name_a != name_b


def test_reads_use_the_read_role_and_a_mutation_the_procedures_role(
    aws_env: dict[str, str],
) -> None:
    aws = AwsAccess(
        read_role_arn=ROLES + "read",
        mutate_role_arn=ROLES + "mutate-{procedure}",
        procedures={"DatabaseFailover": "db-failover"},
    )
    reader = aws.client("sts").get_caller_identity()["Arn"]
    assert reader == "arn:aws:sts::123456789012:assumed-role/runbook-read/runbook-read"
    mutator = in_activity(
        lambda: aws.mutating("sts").get_caller_identity()["Arn"], "DatabaseFailover"
    )
    assert mutator == (
        "arn:aws:sts::123456789012:assumed-role/runbook-mutate-db-failover/"
        "db-failover.production.prod-revenue-context-db"
    )


def test_shadow_mode_refuses_every_mutation_before_calling_aws(aws_env: dict[str, str]) -> None:
    aws = AwsAccess(mutate_role_arn=ROLES + "mutate-{procedure}", read_only=True)
    with pytest.raises(ApplicationError) as refused:
        in_activity(lambda: aws.mutating("rds"), "DatabaseFailover")
    assert refused.value.type == "ReadOnly" and refused.value.non_retryable
    assert "RUNBOOK_READ_ONLY" in str(refused.value)
