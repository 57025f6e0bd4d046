"""Secrets and signatures, per Standard Webhooks, by its own package: a secret
is `whsec_` and 32 random bytes in base64; each attempt is signed with the
endpoint's secret, and for a day after a rotation with the previous one too
(two signatures in `webhook-signature`, either of which verifies)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks import Webhook

#: How long a rotated secret goes on signing.
ROTATION_OVERLAP_SECONDS = 24 * 3600


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sha256(secret: str) -> str:
    """A secret's SHA-256, in hex: what an idempotency key keeps of it."""
    return hashlib.sha256(secret.encode()).hexdigest()


def headers(message_id: str, body: str, keys: Sequence[str], at: datetime) -> dict[str, str]:
    """The `webhook-id`, `webhook-timestamp` and `webhook-signature` headers of
    a message sent at `at`, signed with each of `keys`."""
    signatures = " ".join(Webhook(key).sign(message_id, at, body) for key in keys)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
        "user-agent": "credit-ledger-webhooks/1",
    }
