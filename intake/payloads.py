"""The two deliveries the webhook takes, parsed into `Alarm`s.

- CloudWatch alarm state changes in an SNS notification's `Message`
  (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html);
- Prometheus Alertmanager webhook payloads, version 4
  (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config).
"""

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from intake.alarms import Alarm, Rejected


class Dimension(BaseModel):
    name: str
    value: str


class Trigger(BaseModel):
    model_config = ConfigDict(extra="ignore")

    dimensions: list[Dimension] = Field([], alias="Dimensions")


class CloudWatchAlarm(BaseModel):
    model_config = ConfigDict(extra="ignore")

    alarm_name: str = Field(alias="AlarmName", min_length=1, max_length=255)
    new_state: Literal["ALARM", "OK", "INSUFFICIENT_DATA"] = Field(alias="NewStateValue")
    reason: str = Field("", alias="NewStateReason")
    changed_at: datetime = Field(alias="StateChangeTime")
    trigger: Trigger | None = Field(None, alias="Trigger")
    # arn:aws:cloudwatch:<region>:<account>:alarm:<name>: where the alarm fired.
    alarm_arn: str | None = Field(None, alias="AlarmArn", max_length=2048)
    account: str | None = Field(None, alias="AWSAccountId", pattern=r"^\d{12}$")


class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    starts_at: datetime = Field(alias="startsAt")


class AlertmanagerPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str = "4"
    status: Literal["firing", "resolved"]
    alerts: list[AlertmanagerAlert] = Field(min_length=1, max_length=1000)


def problems(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in err.errors()[:5]
    )


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise Rejected(400, f"bad JSON in {what}: {err}") from None
    except RecursionError:  # `[[[[...` within the size limit: the parser's stack runs out
        raise Rejected(400, f"bad JSON in {what}: nested too deeply") from None
    if not isinstance(body, dict):
        raise Rejected(400, f"bad {what}: a JSON object is required")
    return body


def arn_region_account(arn: str | None) -> tuple[str | None, str | None]:
    """`arn:partition:service:region:account:...` -> (region, account), None where absent."""
    parts = (arn or "").split(":")
    if len(parts) < 6 or parts[0] != "arn":
        return None, None
    return parts[3] or None, parts[4] or None


def cloudwatch_alarm(message: str, topic_arn: str | None = None) -> Alarm | None:
    """The alarm in an SNS `Message`; None for INSUFFICIENT_DATA (nothing to do). Its region
    and account come from the alarm's ARN, else from the topic that delivered it."""
    try:
        alarm = CloudWatchAlarm.model_validate(json_object(message.encode(), "SNS Message"))
    except ValidationError as err:
        raise Rejected(400, f"SNS Message is not a CloudWatch alarm: {problems(err)}") from None
    if alarm.new_state == "INSUFFICIENT_DATA":
        return None
    dims = alarm.trigger.dimensions if alarm.trigger else []
    region, account = arn_region_account(alarm.alarm_arn)
    topic_region, topic_account = arn_region_account(topic_arn)
    return Alarm(
        source="cloudwatch",
        name=alarm.alarm_name,
        state=alarm.new_state,
        labels={d.name: d.value for d in dims},
        reason=alarm.reason,
        since=alarm.changed_at,
        account=account or alarm.account or topic_account,
        region=region or topic_region,
    )


def alertmanager_alarms(raw: bytes) -> list[Alarm]:
    try:
        payload = AlertmanagerPayload.model_validate(json_object(raw, "Alertmanager payload"))
    except ValidationError as err:
        raise Rejected(400, f"bad Alertmanager payload: {problems(err)}") from None
    alarms = []
    for i, alert in enumerate(payload.alerts):
        name = alert.labels.get("alertname")
        if not name:
            raise Rejected(400, f"bad Alertmanager payload: alerts.{i}.labels.alertname is missing")
        notes, labels = alert.annotations, alert.labels
        alarms.append(
            Alarm(
                source="alertmanager",
                name=name,
                state="ALARM" if alert.status == "firing" else "OK",
                labels=labels,
                reason=notes.get("summary") or notes.get("description") or "",
                since=alert.starts_at,
                account=labels.get("aws_account_id") or labels.get("account_id"),
                region=labels.get("aws_region") or labels.get("region"),
                environment=labels.get("environment"),
            )
        )
    return alarms
