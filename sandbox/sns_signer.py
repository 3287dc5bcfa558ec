"""Sign SNS-shaped messages with a local key and certificate: for the tests, the alarm-storm
benchmark and game days against a local stack (configure the webhook's allowed certificate
host to where the certificate is served)."""

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from intake.sns import HASHES, SnsMessage

TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:runbook-alarms"


class SnsSigner:
    def __init__(self, cert_url: str, topic_arn: str = TOPIC_ARN) -> None:
        self.cert_url = cert_url
        self.topic_arn = topic_arn
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .sign(self._key, hashes.SHA256())
        )

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def sign(self, body: dict[str, Any], version: str = "2") -> dict[str, Any]:
        """`body` with SignatureVersion, SigningCertURL and Signature added."""
        signed = {**body, "SignatureVersion": version, "SigningCertURL": self.cert_url}
        text = SnsMessage.model_validate(signed).string_to_sign()
        raw = self._key.sign(text, padding.PKCS1v15(), HASHES[version]())
        return {**signed, "Signature": base64.b64encode(raw).decode()}

    def notification(
        self, message: dict[str, Any] | str, subject: str | None = None, version: str = "2"
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": self.topic_arn,
            "Message": message if isinstance(message, str) else json.dumps(message),
            "Timestamp": _now(),
            "UnsubscribeURL": f"{self.cert_url.rsplit('/', 1)[0]}/?Action=Unsubscribe",
        }
        if subject is not None:
            body["Subject"] = subject
        return self.sign(body, version)

    def subscription_confirmation(self, subscribe_url: str, version: str = "2") -> dict[str, Any]:
        body = {
            "Type": "SubscriptionConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": uuid.uuid4().hex,
            "TopicArn": self.topic_arn,
            "Message": f"You have chosen to subscribe to the topic {self.topic_arn}.",
            "SubscribeURL": subscribe_url,
            "Timestamp": _now(),
        }
        return self.sign(body, version)


def cloudwatch_alarm(
    name: str,
    state: str = "ALARM",
    dimensions: dict[str, str] | None = None,
    reason: str = "Threshold Crossed",
    changed_at: datetime | None = None,
) -> dict[str, Any]:
    """A CloudWatch alarm state change as SNS delivers it in `Message`."""
    changed = (changed_at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"
    return {
        "AlarmName": name,
        "AlarmDescription": f"{name} (runbook.md)",
        "AWSAccountId": "123456789012",
        "NewStateValue": state,
        "NewStateReason": reason,
        "StateChangeTime": changed,
        "Region": "US East (N. Virginia)",
        "OldStateValue": "OK" if state == "ALARM" else "ALARM",
        "Trigger": {
            "MetricName": "CPUUtilization",
            "Namespace": "AWS/RDS",
            "Statistic": "AVERAGE",
            "Dimensions": [{"name": k, "value": v} for k, v in (dimensions or {}).items()],
            "Period": 300,
            "EvaluationPeriods": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "Threshold": 80.0,
        },
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
