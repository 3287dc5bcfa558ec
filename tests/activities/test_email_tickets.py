"""Escalation email through SES (the sandbox's moto, sender verified by the local stack) and
P3 tickets through the sandbox's GitHub issues twin: the real activities."""

import uuid

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws_access import AwsAccess
from activities.email import EmailActivities, EmailRequest
from activities.tickets import GitHubTickets, TicketActivities, TicketRequest

pytestmark = pytest.mark.timeout(60)
CONTACTS = {"dba": "dba@company.com"}
REQUEST = EmailRequest(contact="dba", subject="kafka-lag: lag not falling", text="slow queries")


def test_an_escalation_is_emailed_from_the_verified_sender(
    aws_env: dict[str, str], stack_env: dict[str, str]
) -> None:
    ses = AwsAccess().client("ses")
    before = ses.get_send_quota()["SentLast24Hours"]
    email = EmailActivities(ses, stack_env["RUNBOOK_EMAIL_FROM"], CONTACTS)
    result = ActivityEnvironment().run(email.send, REQUEST)
    assert result.sent and "emailed dba@company.com" in result.detail
    assert ses.get_send_quota()["SentLast24Hours"] == before + 1


def test_an_unverified_sender_and_an_unknown_contact_are_refused_for_good(
    aws_env: dict[str, str],
) -> None:
    ses = AwsAccess().client("ses")
    stranger = EmailActivities(ses, "nobody@elsewhere.example", CONTACTS)
    with pytest.raises(ApplicationError) as refused:
        ActivityEnvironment().run(stranger.send, REQUEST)
    assert refused.value.non_retryable and "MessageRejected" in str(refused.value)
    with pytest.raises(
        ApplicationError, match=r"contact: 'cto' is not configured \(RUNBOOK_CONTACTS\); known: dba"
    ):
        ActivityEnvironment().run(stranger.send, REQUEST.model_copy(update={"contact": "cto"}))
    off = ActivityEnvironment().run(EmailActivities(None, None, CONTACTS).send, REQUEST)
    assert not off.sent and "RUNBOOK_EMAIL_FROM is not set" in off.detail


async def test_a_ticket_is_opened_once_however_often_asked(stack_env: dict[str, str]) -> None:
    github = GitHubTickets(
        repo=stack_env["RUNBOOK_TICKETS_GITHUB_REPO"],
        api_url=stack_env["RUNBOOK_TICKETS_GITHUB_URL"],
    )
    token = stack_env["RUNBOOK_TICKETS_GITHUB_TOKEN"]
    request = TicketRequest(
        dedup=f"db-failover/production/db/{uuid.uuid4()}/failover", title="P3", text="plan"
    )
    async with httpx.AsyncClient(timeout=10) as http:
        tickets = TicketActivities(http, github, token)
        first = await ActivityEnvironment().run(tickets.open, request)
        again = await ActivityEnvironment().run(tickets.open, request)  # a retry
        listed = await http.get(
            f"{github.api_url}/repos/{github.repo}/issues",
            params={"labels": "runbook", "state": "all", "per_page": 100},
            headers={"Authorization": f"Bearer {token}"},
        )
        bad = TicketActivities(http, github, "wrong-token")
        with pytest.raises(ApplicationError) as refused:
            await ActivityEnvironment().run(bad.open, request)
        off = await ActivityEnvironment().run(TicketActivities(http, None, None).open, request)
    assert first.opened and first.url and first.number == again.number and first.url == again.url
    assert "opened" in first.detail and "already open" in again.detail
    mine = [i for i in listed.json() if request.dedup in i["body"]]
    assert len(mine) == 1 and mine[0]["title"] == "P3"
    assert refused.value.non_retryable and "401" in str(refused.value)
    assert "wrong-token" not in str(refused.value)  # the token is never in a failure
    assert not off.opened and "no ticket queue configured" in off.detail
