"""Amazon SNS HTTP(S) deliveries: the message, its signature, and the signing certificate.

A message is accepted only when its signature verifies with the certificate at
`SigningCertURL`, and that URL is on an allowed host (default: AWS's own SNS hosts, the
pattern AWS's SDK validators use). Certificates are fetched once and cached.
https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html
"""

import asyncio
import base64
import binascii
import ipaddress
import re
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import BaseModel, ConfigDict, Field

# AWS's SDK message validators accept certificates from these hosts only.
DEFAULT_CERT_HOST_PATTERN = r"sns\.[a-zA-Z0-9-]{3,}\.amazonaws\.com(\.cn)?"
MAX_CERT_BYTES = 16 * 1024
CERT_CACHE_SIZE = 64

MessageType = Literal["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
# The fields each message type signs, in this order (absent optional ones are skipped).
SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
SIGNED_FIELDS["UnsubscribeConfirmation"] = SIGNED_FIELDS["SubscriptionConfirmation"]


class SnsRejected(Exception):
    """The message is refused; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class SnsMessage(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    type: MessageType = Field(alias="Type")
    message_id: str = Field(alias="MessageId")
    topic_arn: str = Field(alias="TopicArn")
    message: str = Field(alias="Message")
    # Kept as sent: the signature covers the text.
    timestamp: str = Field(alias="Timestamp")
    subject: str | None = Field(None, alias="Subject")
    token: str | None = Field(None, alias="Token")
    subscribe_url: str | None = Field(None, alias="SubscribeURL")
    signature_version: str | None = Field(None, alias="SignatureVersion")
    signature: str | None = Field(None, alias="Signature")
    signing_cert_url: str | None = Field(None, alias="SigningCertURL")

    def string_to_sign(self) -> bytes:
        values = self.model_dump(by_alias=True)
        lines: list[str] = []
        for name in SIGNED_FIELDS[self.type]:
            value = values.get(name)
            if value is None:
                continue
            lines += [name, str(value)]
        return ("\n".join(lines) + "\n").encode()


class UrlPolicy:
    """Which URLs SNS may point us at (the signing certificate, the SubscribeURL)."""

    def __init__(self, host_pattern: str = DEFAULT_CERT_HOST_PATTERN) -> None:
        self._host = re.compile(host_pattern)

    def refusal(self, url: str | None, what: str) -> str | None:
        """Why `url` may not be fetched, or None."""
        if not url:
            return f"{what} is missing"
        parts = urlsplit(url)
        host = parts.hostname or ""
        if not self._host.fullmatch(host):
            return f"{what} host {host!r} is not an allowed SNS host"
        if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(host)):
            return f"{what} must be https"
        if parts.username or parts.password:
            return f"{what} must not carry credentials"
        return None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CertificateStore:
    """Signing certificates by URL: fetched once (concurrent callers share the fetch),
    kept while valid."""

    def __init__(self, http: httpx.AsyncClient, policy: UrlPolicy) -> None:
        self._http = http
        self._policy = policy
        self._keys: dict[str, asyncio.Task[tuple[rsa.RSAPublicKey, datetime]]] = {}

    async def public_key(self, url: str | None) -> rsa.RSAPublicKey:
        if refusal := self._policy.refusal(url, "SigningCertURL"):
            raise SnsRejected(403, refusal)
        assert url is not None
        if not url.lower().endswith(".pem"):
            raise SnsRejected(403, "SigningCertURL must name a .pem certificate")
        task = self._keys.get(url)
        if task is None or (task.done() and _expired(task)):
            if len(self._keys) >= CERT_CACHE_SIZE:
                self._keys.clear()
            task = self._keys[url] = asyncio.ensure_future(self._fetch(url))
        try:
            key, _ = await asyncio.shield(task)
        except BaseException:
            if self._keys.get(url) is task:
                del self._keys[url]  # a failed fetch is not cached
            raise
        return key

    async def _fetch(self, url: str) -> tuple[rsa.RSAPublicKey, datetime]:
        try:
            resp = await self._http.get(url, timeout=5, follow_redirects=False)
        except httpx.HTTPError as err:
            raise SnsRejected(
                503, f"signing certificate not fetched: {type(err).__name__}"
            ) from None
        if resp.status_code != 200 or len(resp.content) > MAX_CERT_BYTES:
            raise SnsRejected(503, f"signing certificate not fetched: HTTP {resp.status_code}")
        try:
            cert = x509.load_pem_x509_certificate(resp.content)
        except ValueError:
            raise SnsRejected(403, "SigningCertURL does not hold a PEM certificate") from None
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SnsRejected(403, "the signing certificate is not valid now")
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsRejected(403, "the signing certificate's key is not RSA")
        return key, cert.not_valid_after_utc


def _expired(task: asyncio.Task[tuple[rsa.RSAPublicKey, datetime]]) -> bool:
    if task.cancelled() or task.exception() is not None:
        return True
    return task.result()[1] < datetime.now(UTC)


async def verify(message: SnsMessage, certs: CertificateStore) -> None:
    """Raise SnsRejected unless the message is signed by the certificate it names."""
    if not message.signature or not message.signature_version:
        raise SnsRejected(401, "unsigned SNS message: Signature and SignatureVersion are required")
    algorithm = HASHES.get(message.signature_version)
    if algorithm is None:
        raise SnsRejected(403, f"SignatureVersion {message.signature_version!r} is not 1 or 2")
    try:
        signature = base64.b64decode(message.signature, validate=True)
    except (binascii.Error, ValueError):
        raise SnsRejected(403, "Signature is not base64") from None
    key = await certs.public_key(message.signing_cert_url)
    try:
        key.verify(signature, message.string_to_sign(), padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise SnsRejected(403, "bad SNS signature: the message does not match it") from None
