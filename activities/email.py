"""Escalation email through Amazon SES (runbook.md, "Emergency Contacts": the Database Team,
Infrastructure). The workflow names a contact by role; the addresses stay in the worker."""

from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

# SES refusals no retry will change: an unverified sender, a missing permission.
PERMANENT = frozenset(
    {"MessageRejected", "MailFromDomainNotVerified", "AccessDenied", "AccessDeniedException"}
)


class EmailRequest(BaseModel):
    contact: str = Field(min_length=1, max_length=32)  # a role of the contacts: dba, devops
    subject: str = Field(min_length=1, max_length=200)
    text: str = Field(max_length=20_000)


class EmailResult(BaseModel):
    sent: bool
    detail: str


class EmailActivities:
    def __init__(self, ses: Any | None, sender: str | None, contacts: dict[str, str]) -> None:
        """`ses`: an SES client (None: email is off); `sender`: a verified SES identity."""
        self._ses = ses
        self._sender = sender
        self._contacts = contacts

    @activity.defn(name="email.send")
    def send(self, req: EmailRequest) -> EmailResult:
        address = self._contacts.get(req.contact)
        if address is None:
            known = ", ".join(sorted(self._contacts)) or "none"
            raise ApplicationError(
                f"contact: {req.contact!r} is not configured (RUNBOOK_CONTACTS); known: {known}",
                type="UnknownContact",
                non_retryable=True,
            )
        if self._ses is None or not self._sender:
            return EmailResult(
                sent=False, detail=f"RUNBOOK_EMAIL_FROM is not set: {address} not emailed"
            )
        sent = self._deliver(self._ses, address, req)
        return EmailResult(sent=True, detail=f"emailed {address} ({sent})")

    def _deliver(self, ses: Any, address: str, req: EmailRequest) -> str:
        from botocore.exceptions import ClientError

        try:
            answer = ses.send_email(
                Source=self._sender,
                Destination={"ToAddresses": [address]},
                Message={
                    "Subject": {"Data": req.subject, "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": req.text, "Charset": "UTF-8"}},
                },
            )
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in PERMANENT:
                raise ApplicationError(
                    f"SES refused the email to {address}: {code}: {err}",
                    type="EmailRefused",
                    non_retryable=True,
                ) from None
            raise
        return f"SES message {answer['MessageId']}"
