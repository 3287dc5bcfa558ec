"""Which AWS credentials a call uses: power in time, not only in scope.

The worker builds one `AwsAccess` per environment and gives it to every AWS activity class.
Reads (every diagnosis, and the checks a mutation makes first) use the environment's read
role, or the worker's own identity when none is configured. A mutating call goes through
`mutating(service)`: inside that one activity the procedure's mutate role is assumed with
STS, under a session name that carries the workflow id, so CloudTrail ties each change to
the run that made it. In shadow mode (RUNBOOK_READ_ONLY) `mutating` refuses, whatever the
workflow asked. A call the role's policy does not allow fails at once, without retries,
with AWS's AccessDenied and the role in the message.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from telemetry import trace_aws_calls

if TYPE_CHECKING:  # boto is imported where it is used: the CLI imports this module's types
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

# Error codes AWS answers when a policy does not allow the call (IAM, RDS, ECS, ...).
DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})
# STS: a role session name is 2-64 of these characters.
SESSION_NAME_MAX = 64
_NOT_IN_SESSION_NAME = re.compile(r"[^\w+=,.@-]")
# The shortest session STS grants; a mutation is one or two calls.
MUTATE_SESSION_SECONDS = 900


def session_name(workflow_id: str) -> str:
    """The workflow id in STS's alphabet (`/` becomes `.`), trimmed to 64 characters with a
    hash of the whole id, so two long ids never share a name."""
    name = _NOT_IN_SESSION_NAME.sub("-", workflow_id.replace("/", "."))
    if len(name) <= SESSION_NAME_MAX:
        return name.ljust(2, "-")
    digest = hashlib.sha256(workflow_id.encode()).hexdigest()[:10]
    return f"{name[: SESSION_NAME_MAX - len(digest) - 1]}.{digest}"


class AwsAccess:
    def __init__(
        self,
        session: boto3.session.Session | None = None,
        config: Config | None = None,
        *,
        region: str | None = None,
        read_role_arn: str | None = None,
        mutate_role_arn: str | None = None,
        procedures: Mapping[str, str] | None = None,
        read_only: bool = False,
        tracer: Any = None,
    ) -> None:
        """`mutate_role_arn` may hold `{procedure}`: the CLI name of the procedure whose
        workflow type (`procedures`: workflow type -> CLI name) is mutating."""
        import boto3

        self._base = session or boto3.session.Session()
        self._config = config
        self._region = region
        self._mutate_role = mutate_role_arn
        self._procedures = dict(procedures or {})
        self.read_only = read_only
        self._tracer = tracer  # a span per AWS call when set (telemetry.py)
        # Clients are thread-safe, sessions are not: every client is made under the lock.
        self._lock = threading.RLock()  # a read client made may fetch its role: re-entered
        self._clients: dict[tuple[str, str], Any] = {}
        self._reader = self._assuming(read_role_arn) if read_role_arn else self._base

    def client(self, service: str) -> Any:
        """The read client of a service (built once)."""
        return self._cached("read", service, self._reader)

    def _cached(self, who: str, service: str, session: boto3.session.Session) -> Any:
        with self._lock:
            if (who, service) not in self._clients:
                made = session.client(  # type: ignore[call-overload]
                    service, region_name=self._region, config=self._config
                )
                self._clients[who, service] = trace_aws_calls(made, self._tracer)
            return self._clients[who, service]

    def mutating(self, service: str) -> Any:
        """A client for the mutating call of the running activity."""
        info = activity.info()
        if self.read_only:
            raise ApplicationError(
                "RUNBOOK_READ_ONLY: this worker runs in shadow mode and changes nothing",
                type="ReadOnly",
                non_retryable=True,
            )
        if not self._mutate_role:
            own = self._cached("own", service, self._base)
            return _Refusing(own, "the worker's own identity")
        workflow_type, workflow_id = info.workflow_type or "", info.workflow_id or ""
        procedure = self._procedures.get(workflow_type, workflow_type)
        role = self._mutate_role.replace("{procedure}", procedure)
        creds = self._assume(role, session_name(workflow_id), MUTATE_SESSION_SECONDS)
        with self._lock:
            raw = self._base.client(  # type: ignore[call-overload]
                service,
                region_name=self._region,
                config=self._config,
                aws_access_key_id=creds["AccessKeyId"],
                aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"],
            )
        return _Refusing(trace_aws_calls(raw, self._tracer), f"role {role}")

    def _assume(self, role_arn: str, name: str, seconds: int) -> dict[str, Any]:
        sts = self._cached("own", "sts", self._base)
        try:
            answer = sts.assume_role(
                RoleArn=role_arn, RoleSessionName=name, DurationSeconds=seconds
            )
        except sts.exceptions.ClientError as err:
            _refuse_if_denied(err, "the worker's own identity", role_arn)
            raise
        return dict(answer["Credentials"])

    def _assuming(self, role_arn: str) -> boto3.session.Session:
        """A session whose credentials come from the role, refreshed before they expire."""
        import boto3
        from botocore.credentials import DeferredRefreshableCredentials
        from botocore.session import get_session

        def fetch() -> dict[str, str]:
            creds = self._assume(role_arn, "runbook-read", 3600)
            expiry: datetime = creds["Expiration"]
            return {
                "access_key": creds["AccessKeyId"],
                "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"],
                "expiry_time": expiry.isoformat(),
            }

        core = get_session()
        core._credentials = DeferredRefreshableCredentials(fetch, "sts-assume-role")  # type: ignore[attr-defined]
        return boto3.session.Session(botocore_session=core)


def _refuse_if_denied(err: ClientError, who: str, target: str = "") -> None:
    error = err.response.get("Error", {})
    if error.get("Code") in DENIED:
        on = f" ({target})" if target else ""
        raise ApplicationError(
            f"for {who}{on}: {error.get('Message') or 'not allowed by its policy'}",
            type="AccessDenied",
            non_retryable=True,
        ) from err


class _Refusing:
    """A boto3 client whose calls turn AWS's access denials into a non-retryable error that
    names who was denied; every other error passes unchanged."""

    def __init__(self, client: Any, who: str) -> None:
        self._client = client
        self._who = who

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except self._client.exceptions.ClientError as err:
                _refuse_if_denied(err, self._who)
                raise

        return call
