"""The ticket queue (runbook.md, Escalation Matrix: P3 goes to the ticket queue): a GitHub
issue through its REST API. Off unless a repository and a token are configured; the token is
a secret: it stays in this module's client, never in a request, a result or a log line."""

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

if TYPE_CHECKING:
    import httpx

# Tickets the runbooks open carry this label: the dedup search lists only them.
LABEL = "runbook"
# A retry after a lost answer finds its ticket among the newest this many.
SEARCH_PAGES, PER_PAGE = 3, 100
# GitHub answers these to a request no retry will fix: bad token, no access, no such
# repository, an invalid issue.
PERMANENT = {401: "bad credentials", 403: "forbidden", 404: "no such repository", 410: "gone"}


class TicketRequest(BaseModel):
    # Unique for what the ticket is about (run and gate): written into the body, searched
    # for before a ticket is opened, so a retried activity never opens two.
    dedup: str = Field(min_length=1, max_length=300)
    title: str = Field(min_length=1, max_length=256)
    text: str = Field(max_length=20_000)


class TicketResult(BaseModel):
    opened: bool
    detail: str
    number: int | None = None
    url: str | None = None


class GitHubTickets(BaseModel):
    repo: str = Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
    api_url: str = "https://api.github.com"


def marker(dedup: str) -> str:
    return f"<!-- runbook-ticket: {dedup} -->"


class TicketActivities:
    def __init__(
        self, http: "httpx.AsyncClient", github: GitHubTickets | None, token: str | None
    ) -> None:
        self._http = http
        self._github = github if token else None
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

    @activity.defn(name="tickets.open")
    async def open(self, req: TicketRequest) -> TicketResult:
        github = self._github
        if github is None:
            return TicketResult(
                opened=False, detail="no ticket queue configured (RUNBOOK_TICKETS_GITHUB_REPO)"
            )
        issues = f"{github.api_url.rstrip('/')}/repos/{github.repo}/issues"
        tag = marker(req.dedup)
        if found := await self._find(issues, tag):
            return _result(found, github.repo, "already open")
        body = {"title": req.title, "body": f"{req.text}\n\n{tag}", "labels": [LABEL]}
        issue = self._json(await self._http.post(issues, json=body, headers=self._headers))
        return _result(issue, github.repo, "opened")

    async def _find(self, issues: str, tag: str) -> dict[str, Any] | None:
        for page in range(1, SEARCH_PAGES + 1):
            params: dict[str, str | int] = {
                "labels": LABEL,
                "state": "all",
                "per_page": PER_PAGE,
                "page": page,
            }
            listed = self._json(await self._http.get(issues, params=params, headers=self._headers))
            assert isinstance(listed, list)
            for issue in listed:
                if tag in (issue.get("body") or ""):
                    return dict(issue)
            if len(listed) < PER_PAGE:
                return None
        return None

    def _json(self, response: "httpx.Response") -> Any:
        status = response.status_code
        if status in PERMANENT or status == 422:
            why = PERMANENT.get(status, f"invalid issue: {response.text[:300]}")
            raise ApplicationError(
                f"GitHub answered {status} ({why})", type="TicketRefused", non_retryable=True
            )
        if status >= 300:
            raise ApplicationError(f"GitHub answered {status}", type="TicketUnavailable")
        return response.json()


def _result(issue: dict[str, Any], repo: str, verb: str) -> TicketResult:
    number, url = int(issue["number"]), str(issue["html_url"])
    return TicketResult(
        opened=True, detail=f"{repo}#{number} {verb}: {url}", number=number, url=url
    )
