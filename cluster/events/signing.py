"""Standard Webhooks signing (https://www.standardwebhooks.com).

The receiver checks ``webhook-signature`` = ``v1,`` + base64 HMAC-SHA256 of
``"{webhook-id}.{webhook-timestamp}.{body}"``, keyed by the base64-decoded secret after
``whsec_``. Written here with hmac rather than taken from a package: it is a few lines, and the
tests check it with the ``standardwebhooks`` package, an independent receiver.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import datetime

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """``whsec_`` + base64 of 24 random bytes (the spec asks for 24 to 64)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def message_id(event_id: int) -> str:
    """webhook-id: the event's, so it is the same on every retry and receivers deduplicate."""
    return f"evt_{event_id}"


def body(event_type: str, created_at: datetime, data: dict) -> bytes:
    return json.dumps({"type": event_type, "timestamp": created_at.isoformat(), "data": data},
                      separators=(",", ":"), default=str).encode()


def sign(secret: str, msg_id: str, timestamp: int, payload: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + payload
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(secret: str, msg_id: str, timestamp: int, payload: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": "depthmill-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, payload),
    }
