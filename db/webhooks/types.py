"""The rows webhook statements read and write, and an attempt's outcome."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from db.errors import IllegalTransition

DELIVERY_STATUSES = ("pending", "delivering", "delivered", "failed")
# What is kept of a receiver's answer.
RESPONSE_BODY_CHARS = 4096


class DeliveryInFlight(IllegalTransition):
    """A retry of a delivery being sent right now (the API answers 409)."""

    def __init__(self, delivery_id: int) -> None:
        self.item_id, self.status, self.action = delivery_id, "delivering", "retry"
        ValueError.__init__(self, f"cannot retry delivery {delivery_id}: it is being delivered "
                                  "right now; look again once it is done")


@dataclass(frozen=True)
class Webhook:
    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Delivery:
    id: int
    webhook_id: uuid.UUID
    event_id: int
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime
    response_status: int | None
    response_body: str | None
    last_error: str | None
    latency_ms: float | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class ClaimedDelivery:
    """What the deliverer needs to send one delivery, and its lease."""

    id: int
    webhook_id: uuid.UUID
    url: str
    secret: str
    event_id: int
    event_type: str
    event_data: dict
    event_created_at: datetime
    attempt: int
    lease_owner: str


@dataclass(frozen=True)
class DeliveryPage:
    items: list[Delivery]
    next_cursor: str | None


@dataclass(frozen=True)
class Outcome:
    """How one attempt went. ``kind``: delivered; retry (at ``retry_in_s``); failed for good.
    ``disable``: a reason to disable the endpoint now (it answered 410 Gone)."""

    kind: str
    response_status: int | None = None
    response_body: str | None = None
    error: str | None = None
    latency_ms: float | None = None
    retry_in_s: float = 0.0
    disable: str | None = None
