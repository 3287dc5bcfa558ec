"""moto as IAM (`runbook stack up --iam`): the shipped policies of deploy/iam/, enforced.

The identities are made in moto's backend (no request is spent on them), then moto checks
every request from the first on: the sandbox calls as `sandbox-admin` (allowed everything),
the worker as `runbook-worker`, whose keys the stack gives it (AWS_ACCESS_KEY_ID). That user
may only assume `runbook-read` and the `runbook-mutate-<procedure>` roles, each holding its
shipped policy and trusting only the worker.

moto checks the action of every call, and for sts:AssumeRole the role and its trust policy.
It checks neither resources (it evaluates every other call against `*`) nor conditions, so
the policies are loaded with `Resource: *` and without their conditions; and it names
CloudWatch's actions `monitoring:` (the API's signing name) where IAM says `cloudwatch:`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSRequest
from moto import settings as moto_settings
from moto.iam.access_control import IAMRequestBase
from moto.iam.models import IAMBackend, iam_backends

POLICIES = Path(__file__).resolve().parents[1] / "deploy" / "iam"
# The sandbox's own identity: fake keys, valid only in this moto.
ADMIN_KEYS = ("AKIASANDBOXADMIN0001", "sandbox-admin-local-only-secret")
ALLOW_ALL = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


def render(name: str, account: str, region: str, **extra: str) -> dict[str, Any]:
    """A shipped policy with its placeholders filled in."""
    text = (POLICIES / name).read_text().replace("ACCOUNT_ID", account).replace("REGION", region)
    for placeholder, value in extra.items():
        text = text.replace(placeholder, value)
    return dict(json.loads(text))


def for_moto(policy: dict[str, Any]) -> dict[str, Any]:
    """What moto can evaluate: actions only (see the module's docstring)."""
    statements = []
    for statement in policy["Statement"]:
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        if all(a.startswith("sts:") for a in actions):
            statements.append(statement)  # moto checks the role ARN: keep it
            continue
        actions += [
            a.replace("cloudwatch:", "monitoring:") for a in actions if a.startswith("cloudwatch:")
        ]
        kept = {k: v for k, v in statement.items() if k != "Condition"}
        statements.append({**kept, "Action": actions, "Resource": "*"})
    return {**policy, "Statement": statements}


def enforce(account: str, region: str, worker_keys: tuple[str, str]) -> tuple[str, str]:
    """Create the identities and turn enforcement on; the sandbox's own keys."""
    backend: IAMBackend = iam_backends[account]["aws"]
    _user(backend, region, "sandbox-admin", ALLOW_ALL, ADMIN_KEYS)
    worker = _user(
        backend, region, "runbook-worker", render("worker.json", account, region), worker_keys
    )
    trust = json.dumps(render("trust.json", account, region, WORKER_ROLE_ARN=worker))
    roles = {"runbook-read": "read.json"}
    roles |= {f"runbook-{p.stem}": p.name for p in sorted(POLICIES.glob("mutate-*.json"))}
    for role, file in roles.items():
        backend.create_role(role, trust, "/", None, f"runbook: {file}", [], None)
        policy = for_moto(render(file, account, region, HOSTED_ZONE_ID="*"))
        backend.put_role_policy(role, "runbook", json.dumps(policy))
    _sign_bodiless_requests_without_a_body()
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # every request from now on
    return ADMIN_KEYS


def _sign_bodiless_requests_without_a_body() -> None:
    """moto checks a GET's signature over a body made of its headers (Route 53's GETs all
    fail with SignatureDoesNotMatch): a GET, HEAD or DELETE is signed over no body."""
    original = IAMRequestBase._create_aws_request
    if getattr(original, "_runbook_patch", False):
        return

    def create(self: IAMRequestBase) -> AWSRequest:
        request = original(self)
        if self._method in ("GET", "HEAD", "DELETE"):
            request.data = b""
        return request

    create._runbook_patch = True  # type: ignore[attr-defined]
    IAMRequestBase._create_aws_request = create  # type: ignore[method-assign]


def _user(
    backend: IAMBackend, region: str, name: str, policy: dict[str, Any], keys: tuple[str, str]
) -> str:
    user = backend.create_user(region, name)
    backend.put_user_policy(name, "runbook", json.dumps(policy))
    key = backend.create_access_key(name)
    backend.access_keys.pop(key.physical_resource_id, None)
    key.access_key_id, key.secret_access_key = keys
    backend.access_keys[key.access_key_id] = key
    return str(user.arn)
