"""Keyset cursors: the sort key of a page's last row, opaque to clients.

A cursor is the key's values as a JSON list, base64url without padding. ``decode`` is told the
key's types and checks the cursor holds exactly those; anything else is ``InvalidCursor`` (the
API answers 400). Cursors encoded with padding (media pages before this module) still decode.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import datetime

from db.errors import InvalidCursor

KeyValue = int | str | datetime | uuid.UUID

_DECODERS: dict[type, Callable[[object], KeyValue]] = {
    int: int,
    str: str,
    datetime: datetime.fromisoformat,
    uuid.UUID: uuid.UUID,
}


def _plain(value: KeyValue) -> int | str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def encode(*key: KeyValue) -> str:
    raw = json.dumps([_plain(v) for v in key])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(cursor: str, *types: type) -> tuple:
    """The key ``encode`` wrote, each value read back as the type given in its place."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError("wrong shape")
        return tuple(_DECODERS[t](v) for t, v in zip(types, values))
    except (ValueError, TypeError, UnicodeDecodeError) as exc:  # binascii.Error is a ValueError
        raise InvalidCursor(f"invalid cursor {cursor[:64]!r}") from exc
