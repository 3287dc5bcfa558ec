"""Secrets Manager: read and change ONE numeric key of a JSON secret, never the others.

The runbook's own command (`update-secret --secret-string '{"LLM_DAILY_BUDGET": ...}'`)
would replace the whole secret and lose every other key. Here the secret is read, one key
is changed, and a new version is written with a `ClientRequestToken` the workflow derives
from its id, run and step, so a retry never creates a second version.

No secret value leaves these functions: results carry the key's name, the old and new
numbers and version ids; error messages name the secret and the key, never a value.
"""

import json
from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.approvals import Authority
from activities.aws_access import AwsAccess
from activities.keepalive import heartbeating

CURRENT, PREVIOUS = "AWSCURRENT", "AWSPREVIOUS"


class SecretNumberRequest(BaseModel):
    secret_id: str = Field(min_length=1)
    key: str = Field(min_length=1)


class SecretNumber(BaseModel):
    secret_id: str
    key: str
    value: float
    version_id: str
    # How many keys the secret holds (names and values stay inside the activity).
    key_count: int


class SetSecretNumberRequest(BaseModel):
    secret_id: str = Field(min_length=1)
    key: str = Field(min_length=1)
    value: float = Field(gt=0)
    # Secrets Manager wants 32-64 characters; it becomes the new version's id.
    client_request_token: str = Field(min_length=32, max_length=64)
    # The approvals this change acts on; the worker checks them against the run that
    # scheduled it (activities/decision_guard.py) before the activity runs.
    authority: Authority | None = None


class SecretNumberChange(BaseModel):
    secret_id: str
    key: str
    old_value: float
    new_value: float
    # The version that was current before: moving AWSCURRENT back to it undoes the change.
    previous_version_id: str | None
    version_id: str
    changed: bool
    key_count: int
    detail: str


def _invalid(message: str, kind: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


class SecretsActivities:
    def __init__(self, aws: AwsAccess) -> None:
        self._aws = aws
        self._sm = aws.client("secretsmanager")

    def _read(self, secret_id: str, key: str) -> tuple[dict[str, Any], str, float]:
        """The secret's keys, its current version id and the key's number."""
        try:
            raw = self._sm.get_secret_value(SecretId=secret_id, VersionStage=CURRENT)
        except self._sm.exceptions.ClientError as err:
            if err.response["Error"]["Code"] == "ResourceNotFoundException":
                raise _invalid(
                    f"secret_id: no secret named {secret_id!r}", "SecretNotFound"
                ) from None
            raise
        try:
            values = json.loads(raw.get("SecretString") or "")
        except ValueError:
            values = None  # the decoder's message may quote the secret: not kept
        if not isinstance(values, dict):
            raise _invalid(f"{secret_id} is not a JSON object of keys", "SecretNotJson")
        if key not in values:
            raise _invalid(
                f"key: {secret_id} has no key {key!r}; it has {len(values)} other keys",
                "SecretKeyMissing",
            )
        try:
            number = float(values[key])
        except (TypeError, ValueError):
            raise _invalid(f"{secret_id} {key} is not a number", "SecretKeyNotNumber") from None
        return values, raw["VersionId"], number

    def _stage_version(self, secret_id: str, stage: str) -> str | None:
        described = self._sm.describe_secret(SecretId=secret_id)
        stages = described.get("VersionIdsToStages") or {}
        return next((vid for vid, names in stages.items() if stage in names), None)

    @activity.defn(name="secrets.read_number")
    def read_number(self, req: SecretNumberRequest) -> SecretNumber:
        values, version_id, number = self._read(req.secret_id, req.key)
        return SecretNumber(
            secret_id=req.secret_id,
            key=req.key,
            value=number,
            version_id=version_id,
            key_count=len(values),
        )

    @activity.defn(name="secrets.set_number", no_thread_cancel_exception=True)
    @heartbeating
    def set_number(self, req: SetSecretNumberRequest) -> SecretNumberChange:
        values, version_id, old = self._read(req.secret_id, req.key)
        change = SecretNumberChange(
            secret_id=req.secret_id,
            key=req.key,
            old_value=old,
            new_value=req.value,
            previous_version_id=version_id,
            version_id=version_id,
            changed=False,
            key_count=len(values),
            detail="",
        )
        if version_id == req.client_request_token:
            # Our own write already landed (a retry after a crash or a lost answer).
            previous = self._stage_version(req.secret_id, PREVIOUS)
            detail = f"version {version_id} already written by this step"
            return change.model_copy(update={"previous_version_id": previous, "detail": detail})
        if old == req.value:
            detail = f"{req.key} is already {req.value:g}: no new version"
            return change.model_copy(update={"previous_version_id": None, "detail": detail})
        merged = {**values, req.key: _like(values[req.key], req.value)}
        written = self._aws.mutating("secretsmanager").put_secret_value(
            SecretId=req.secret_id,
            SecretString=json.dumps(merged),
            ClientRequestToken=req.client_request_token,
        )
        return change.model_copy(
            update={
                "version_id": written["VersionId"],
                "changed": True,
                "detail": f"{req.key} {old:g} -> {req.value:g}; {len(values) - 1} other keys kept",
            }
        )


def _like(old: Any, value: float) -> Any:
    """The new value in the old one's type: the runbook keeps numbers as strings ("200.0")."""
    if isinstance(old, str):
        return repr(float(value))
    if isinstance(old, int) and not isinstance(old, bool) and value.is_integer():
        return int(value)
    return value
