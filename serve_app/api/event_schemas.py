"""What each event says: one model per type, the body that /api/events streams and a webhook gets.

The fields are those the SQL writes (migration 013's triggers; db/queue/statements.py's
completing statements and REPORT_DRAINED; db/webhooks.py's send_test), with ``extra="forbid"``,
so a field added there and not here fails tests/serve_app/test_routes_events.py, which validates
real events against these models. The models go into the OpenAPI document's ``webhooks``
section, one entry per type.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from db.events import EVENT_TYPES, Event
from db.vocabulary import Kind


class _Sql(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MediaCreatedData(_Sql):
    media_id: uuid.UUID
    kind: Kind
    mime: str
    bytes: int
    sha256: str
    original_name: str | None
    width: int | None
    height: int | None
    duration: float | None = Field(description="seconds; videos only")
    taken_at: datetime | None


class MediaDeletedData(_Sql):
    media_id: uuid.UUID
    kind: Kind


class _Item(_Sql):
    item_id: uuid.UUID = Field(description="the queue item")
    media_id: uuid.UUID
    model: str
    kind: Kind
    priority: int
    attempt: int = Field(description="claims so far")
    max_attempts: int


class ItemQueuedData(_Item):
    status: Literal["queued"]
    previous_status: str | None = Field(
        default=None, description="absent for a new item; else what it was (pending, processing "
        "when given back unrun, failed or cancelled when retried)")


class ItemStartedData(_Item):
    status: Literal["processing"]
    worker: str | None = Field(description="the lease owner")


class ItemRetryingData(_Item):
    status: Literal["queued"]
    error: str | None
    next_attempt_at: datetime


class Output(_Sql):
    format: str
    width: int
    height: int


class ItemCompletedData(_Item):
    status: Literal["completed"]
    seconds: float | None = Field(description="processing time of the last attempt")
    outputs: list[Output] = Field(description="what was stored: one entry per format")


class ItemFailedData(_Item):
    status: Literal["failed"]
    last_error: str | None


class ItemCancelledData(_Item):
    status: Literal["cancelled"]


class QueueDrainedData(_Sql):
    model: str = Field(description="the model whose queue has nothing pending, queued or running")
    failed: int = Field(description="its items left failed")


class WebhookTestData(_Sql):
    webhook_id: uuid.UUID
    url: str


DATA_MODELS: dict[str, type[BaseModel]] = {
    "media.created": MediaCreatedData,
    "media.deleted": MediaDeletedData,
    "item.queued": ItemQueuedData,
    "item.started": ItemStartedData,
    "item.retrying": ItemRetryingData,
    "item.completed": ItemCompletedData,
    "item.failed": ItemFailedData,
    "item.cancelled": ItemCancelledData,
    "queue.drained": QueueDrainedData,
    "webhook.test": WebhookTestData,
}
assert set(DATA_MODELS) == set(EVENT_TYPES), "every event type needs its model"

_DESCRIPTIONS = {
    "media.created": "A photo or video was stored (an upload, a scan).",
    "media.deleted": "A media item and its outputs were deleted.",
    "item.queued": "A queue item is waiting: new, released, retried by hand or given back unrun.",
    "item.started": "A worker claimed the item.",
    "item.retrying": "An attempt failed; the item is queued again for a later attempt.",
    "item.completed": "The item is done: its depth maps are stored.",
    "item.failed": "The item failed for good (attempts spent or an error not worth retrying).",
    "item.cancelled": "The item was cancelled.",
    "queue.drained": "The queue has nothing left to do.",
    "webhook.test": "A test event, sent to one webhook on request.",
}


def _envelope(type_: str) -> type[BaseModel]:
    name = "".join(part.capitalize() for part in type_.replace("_", ".").split(".")) + "Event"
    return type(name, (BaseModel,), {
        "__annotations__": {"type": Literal[type_], "timestamp": datetime,
                            "data": DATA_MODELS[type_]},
        "__doc__": _DESCRIPTIONS[type_],
        "__module__": __name__,
    })


# The body of one event: {"type", "timestamp", "data"}.
EVENT_MODELS: dict[str, type[BaseModel]] = {t: _envelope(t) for t in EVENT_TYPES}


def body(event: Event) -> dict:
    """An outbox row as it leaves: ``timestamp`` is when it was written, ISO 8601."""
    return {"type": event.type, "timestamp": event.created_at.isoformat(), "data": event.data}


def install_event_docs(app: FastAPI) -> None:
    """One OpenAPI ``webhooks`` entry per type; /api/events streams the same bodies."""
    for type_ in EVENT_TYPES:
        model = EVENT_MODELS[type_]

        def describe(event) -> None:
            """Documentation only."""

        describe.__annotations__ = {"event": model, "return": None}  # not a string: a type
        describe.__doc__ = (f"{_DESCRIPTIONS[type_]} Streamed by GET /api/events as `event: "
                            f"{type_}` and posted to the webhooks subscribed to it.")
        app.webhooks.post(type_, summary=type_, operation_id=f"event_{type_.replace('.', '_')}",
                          tags=["events"])(describe)
