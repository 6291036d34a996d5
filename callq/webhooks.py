"""Standard Webhooks verification (https://www.standardwebhooks.com/), with the standard library only.

A delivery carries ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``: space-separated
``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` entries (several while a secret is being rotated). The
secret is ``whsec_`` followed by the base64 of the key bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

TOLERANCE_S = 300  # five minutes either way: a replayed delivery is refused, modest clock skew is not
SECRET_PREFIX = "whsec_"


class WebhookVerificationError(Exception):
    """Raised when a delivery's signature headers are missing, stale or do not match its body."""


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the webhook secret is not 'whsec_' followed by base64") from None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one delivery (what a sender puts in ``webhook-signature``)."""
    digest = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_webhook(headers: Mapping[str, str], body: bytes | str, secret: str, *, now: float | None = None) -> None:
    """Check a delivery's signature and timestamp; raises ``WebhookVerificationError`` unless it is authentic.

    Pass the body exactly as received (bytes): re-serialised JSON would not match its signature.
    """
    lower = {name.lower(): value for name, value in headers.items()}
    msg_id, stamp, signatures = (lower.get(h, "") for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp is not Unix seconds: {stamp!r}") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > TOLERANCE_S:
        raise WebhookVerificationError("webhook-timestamp is more than five minutes from now; refusing a replay")
    raw = body.encode() if isinstance(body, str) else body
    expected = sign(secret, msg_id, timestamp, raw).encode()
    # Every entry is compared (in constant time each), so timing says nothing about which one, if any, matched.
    matched = False
    for candidate in signatures.split():
        if candidate.startswith("v1,"):
            matched |= hmac.compare_digest(candidate.encode(), expected)
    if not matched:
        raise WebhookVerificationError("no webhook-signature matches the body")
