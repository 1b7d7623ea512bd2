"""/api/webhooks: endpoints (Standard Webhooks), their deliveries, tests and retries.

A URL is checked against the address policy (cluster.events.addresses) before it is stored: a
destination that resolves to a loopback, private, link-local or metadata address is refused with
422 and the reason. The deliverer checks again at connect time. The secret is in the answer to
creation and to ``rotate_secret`` only.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from cluster.events import signing
from cluster.events.addresses import InvalidUrl, UnsafeDestination, check_url
from db import webhooks
from db.vocabulary import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from db.webhooks import Delivery, Webhook
from serve_app.api.auth import ADMIN
from serve_app.api.deps import Db, SettingsDep
from serve_app.api.errors import ApiError, documented

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"], dependencies=[ADMIN])


# Postgres text holds no NUL; say so as a 422 rather than fail in the database.
Description = Annotated[str, Field(max_length=1024, pattern=r"^[^\x00]*$")]
DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class WebhookIn(BaseModel):
    url: str = Field(max_length=2048, examples=["https://example.com/depthmill"])
    events: list[str] = Field(min_length=1, max_length=32, examples=[["item.completed"]])
    description: Description | None = None


class WebhookPatch(BaseModel):
    url: str | None = Field(default=None, max_length=2048)
    events: list[str] | None = Field(default=None, min_length=1, max_length=32)
    description: Description | None = None
    enabled: bool | None = None
    rotate_secret: bool = False


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime
    # Only in the answer to creation and to rotate_secret: keep it, it is not shown again.
    secret: str | None = None

    @classmethod
    def of(cls, hook: Webhook, secret: str | None = None) -> WebhookOut:
        return cls.model_validate({**hook.__dict__, "secret": secret})


class DeliveryOut(BaseModel):
    id: int
    webhook_id: uuid.UUID
    event_id: int
    event_type: str
    status: Literal["pending", "delivering", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime
    response_status: int | None
    response_body: str | None
    last_error: str | None
    latency_ms: float | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        return cls.model_validate(d, from_attributes=True)


class DeliveryPageOut(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


def _checked_url(url: str, allow_private: bool) -> str:
    try:
        check_url(url, allow_private=allow_private)
    except InvalidUrl as e:
        raise ApiError(422, "invalid_url", str(e)) from e
    except UnsafeDestination as e:
        raise ApiError(422, "forbidden_destination", str(e)) from e
    return url


def _invalid(e: ValueError) -> ApiError:
    return ApiError(422, "invalid_request", str(e))


@router.post("", status_code=201, response_model=WebhookOut, summary="Add an endpoint")
def create(body: WebhookIn, db: Db, settings: SettingsDep) -> WebhookOut:
    url = _checked_url(body.url, settings.webhook_allow_private)
    secret = signing.new_secret()
    try:
        hook = db.run(webhooks.create, url, body.events, secret, body.description)
    except ValueError as e:
        raise _invalid(e) from e
    return WebhookOut.of(hook, secret)


@router.get("", response_model=list[WebhookOut], summary="Every endpoint (no secrets)")
def list_all(db: Db) -> list[WebhookOut]:
    return [WebhookOut.of(h) for h in db.run(webhooks.list_webhooks)]


@router.get("/{webhook_id}", response_model=WebhookOut, responses=documented(404))
def get(webhook_id: uuid.UUID, db: Db) -> WebhookOut:
    return WebhookOut.of(db.run(webhooks.get, webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookOut, responses=documented(404),
              summary="Change, enable, disable, or rotate the secret (shown once)")
def patch(webhook_id: uuid.UUID, body: WebhookPatch, db: Db, settings: SettingsDep) -> WebhookOut:
    url = _checked_url(body.url, settings.webhook_allow_private) if body.url else None
    changes = {"url": url, "events": body.events, "enabled": body.enabled}
    if "description" in body.model_fields_set:
        changes["description"] = body.description
    secret = signing.new_secret() if body.rotate_secret else None

    def apply(conn):
        hook = webhooks.update(conn, webhook_id, **changes)
        if secret:
            webhooks.rotate_secret(conn, webhook_id, secret)
        return hook

    try:
        hook = db.run(apply)
    except ValueError as e:
        raise _invalid(e) from e
    return WebhookOut.of(hook, secret)


@router.delete("/{webhook_id}", status_code=204, responses=documented(404))
def delete(webhook_id: uuid.UUID, db: Db) -> Response:
    db.run(webhooks.delete, webhook_id)
    return Response(status_code=204)


@router.post("/{webhook_id}/test", status_code=202, response_model=DeliveryOut,
             responses=documented(404), summary="Send a webhook.test event to this endpoint")
def test(webhook_id: uuid.UUID, db: Db) -> DeliveryOut:
    return DeliveryOut.of(db.run(webhooks.send_test, webhook_id))


@router.get("/{webhook_id}/deliveries", response_model=DeliveryPageOut,
            responses=documented(400, 404), summary="Deliveries, newest first, paged")
def deliveries(
    webhook_id: uuid.UUID, db: Db,
    status: Literal["pending", "delivering", "delivered", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> DeliveryPageOut:
    page = db.run(webhooks.list_deliveries, webhook_id, status=status, limit=limit, cursor=cursor)
    return DeliveryPageOut(items=[DeliveryOut.of(d) for d in page.items],
                           next_cursor=page.next_cursor)


@router.post("/{webhook_id}/deliveries/{delivery_id}/retry", status_code=202,
             response_model=DeliveryOut, responses=documented(404, 409),
             summary="Send a delivery again now")
def retry(webhook_id: uuid.UUID, delivery_id: DeliveryId, db: Db) -> DeliveryOut:
    return DeliveryOut.of(db.run(webhooks.retry, webhook_id, delivery_id))
