"""A local GitHub issues API (the P3 ticket queue's twin): one repository, token-checked,
creating and listing issues as GitHub's REST API does (`POST` / `GET
/repos/{owner}/{repo}/issues`, newest first, `labels`, `state`, `per_page`, `page`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sandbox.replies import BadRequest, Reply, json_reply
from sandbox.state import SandboxState

PREFIX = "/github"
# What the local stack configures (stack/servers.py): not a secret, the sandbox's own.
REPO = "company/incidents"
TOKEN = "sandbox-github-token"
ISSUES = f"{PREFIX}/repos/{REPO}/issues"
MAX_TITLE = 256
MAX_BODY = 65_536


@dataclass
class GitHubRequest:
    """What an issues route reads: the token, the query string and the JSON body."""

    authorization: str
    query: dict[str, list[str]]
    body: Any = None

    def with_body(self, body: Any) -> GitHubRequest:
        return GitHubRequest(self.authorization, self.query, body)


def _authorized(request: GitHubRequest) -> Reply | None:
    if request.authorization not in (f"Bearer {TOKEN}", f"token {TOKEN}"):
        return json_reply(401, {"message": "Bad credentials"})
    return None


def create(state: SandboxState, request: GitHubRequest) -> Reply:
    if refused := _authorized(request):
        return refused
    body = request.body
    title = body.get("title") if isinstance(body, dict) else None
    if not isinstance(title, str) or not 0 < len(title) <= MAX_TITLE:
        return json_reply(422, {"message": "Validation Failed", "errors": [{"field": "title"}]})
    text = body.get("body") or ""
    labels = body.get("labels") or []
    if not isinstance(text, str) or len(text) > MAX_BODY or not isinstance(labels, list):
        return json_reply(422, {"message": "Validation Failed", "errors": [{"field": "body"}]})
    with state.lock:
        number = len(state.github_issues) + 1
        issue = {
            "number": number,
            "title": title,
            "body": text,
            "state": "open",
            "labels": [{"name": str(name)} for name in labels],
            "html_url": f"https://github.com/{REPO}/issues/{number}",
            "created_at": datetime.now(UTC).isoformat(),
        }
        state.github_issues.append(issue)
    return json_reply(201, issue)


def listing(state: SandboxState, request: GitHubRequest) -> Reply:
    if refused := _authorized(request):
        return refused
    query = {k: v[-1] for k, v in request.query.items()}
    try:
        per_page = min(int(query.get("per_page", 30)), 100)
        page = max(int(query.get("page", 1)), 1)
    except ValueError:
        raise BadRequest("per_page and page must be numbers") from None
    wanted = {name for name in query.get("labels", "").split(",") if name}
    status = query.get("state", "open")
    with state.lock:
        issues = [dict(issue) for issue in reversed(state.github_issues)]
    issues = [
        i
        for i in issues
        if wanted <= {label["name"] for label in i["labels"]}
        and (status == "all" or i["state"] == status)
    ]
    return json_reply(200, issues[(page - 1) * per_page : page * per_page])


ROUTES: dict[tuple[str, str], Callable[[SandboxState, GitHubRequest], Reply]] = {
    ("POST", ISSUES): create,
    ("GET", ISSUES): listing,
}
