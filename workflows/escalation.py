"""runbook.md's escalations, sent: an email to the contact (the Database Team,
Infrastructure) through activities/email.py, and the Slack line as before."""

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.email import EmailActivities, EmailRequest, EmailResult

from workflows.base import NOTIFY_RETRY, RunbookWorkflow, failure_message

# Cut to the email's bound: a long slow-query list must not fail the escalation.
MAX_EMAIL_TEXT = 20_000


async def escalate(
    run: RunbookWorkflow, contact: str, title: str, text: str, slack: bool = True
) -> bool:
    """Email `contact` and post the escalation to Slack (`slack=False`: the caller posts its
    own line); a failed email is recorded and never fails the runbook. True when sent."""
    request = EmailRequest(contact=contact, subject=title[:200], text=text[:MAX_EMAIL_TEXT])
    sent = False
    try:
        result: EmailResult = await workflow.execute_activity_method(
            EmailActivities.send,
            request,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=NOTIFY_RETRY,
        )
        sent = result.sent
        run.record(f"email {contact}", "ok" if sent else "skipped", result.detail)
    except ActivityError as err:
        run.record(f"email {contact}", "failed", failure_message(err))
    if slack:
        await run.notify("escalation", title, text, {"Escalated to": contact})
    return sent
