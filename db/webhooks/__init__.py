"""Webhook endpoints and their deliveries (migration 013): every statement on ``webhooks`` and
``webhook_deliveries`` lives here.

Deliveries are claimed like queue items: claim and mark in one statement, ``FOR UPDATE SKIP
LOCKED``, a lease identified by (delivery id, owner, attempt). ``attempts`` grows at every claim,
so it fences: a holder whose lease expired and whose delivery was claimed again records nothing.
An expired 'delivering' lease is claimable again, which is how a killed deliverer's work is sent
once more (at least once; receivers deduplicate on webhook-id, the event's id).

Order: at most one delivery per endpoint is in flight, and each claim takes an endpoint's oldest
*due* delivery, so an endpoint gets its events in order while it answers. A delivery waiting for
its retry does not hold the later ones back (they are sent meanwhile): an endpoint that is down
for a while gets what it missed in order once it is back, but one that refuses a single event
gets the next ones before that event's retry. In order where practical, never stuck.

Secrets are read only by ``create``, ``rotate_secret`` (which return them once) and ``claim``
(the deliverer signs with them); ``Webhook`` has no secret field, so no listing can leak one.

- ``types``: the rows (dataclasses), delivery statuses, an attempt's ``Outcome``;
- ``endpoints``: create, list, get, update, rotate the secret, delete;
- ``deliveries``: an endpoint's deliveries as the API shows them, a retry by hand, a test;
- ``deliverer``: what the delivery actor runs (claim, heartbeat, record, the next claim, when
  the next is due, pruning old events).

``from db import webhooks`` and ``webhooks.X`` reach all of them.
"""

from __future__ import annotations

from db.webhooks.deliverer import (
    claim,
    due_at,
    extend_leases,
    prune_events,
    record,
    record_and_claim_next,
)
from db.webhooks.deliveries import get_delivery, list_deliveries, retry, send_test
from db.webhooks.endpoints import create, delete, get, list_webhooks, rotate_secret, update
from db.webhooks.types import (
    DELIVERY_STATUSES,
    RESPONSE_BODY_CHARS,
    ClaimedDelivery,
    Delivery,
    DeliveryInFlight,
    DeliveryPage,
    Outcome,
    Webhook,
)

__all__ = [
    "DELIVERY_STATUSES", "RESPONSE_BODY_CHARS", "ClaimedDelivery", "Delivery", "DeliveryInFlight",
    "DeliveryPage", "Outcome", "Webhook", "claim", "create", "delete", "due_at",
    "extend_leases", "get", "get_delivery", "list_deliveries", "list_webhooks", "prune_events",
    "record", "record_and_claim_next", "retry", "rotate_secret", "send_test", "update",
]
