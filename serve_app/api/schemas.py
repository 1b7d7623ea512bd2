"""Response models: the API's types at the boundary."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from db.media import MediaItem
from db.queue import Kind, QueueItem, Status


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    """The body of every 4xx and 5xx."""

    error: ErrorDetail


class QueueItemOut(BaseModel):
    id: uuid.UUID
    media_id: uuid.UUID
    model_id: str
    kind: str
    bytes: int
    status: str
    priority: int
    attempts: int
    max_attempts: int
    last_error: str | None
    error_count: int
    cancel_requested: bool
    lease_owner: str | None
    lease_expires_at: datetime | None
    run_after: datetime
    queued_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    processing_duration: float | None

    @classmethod
    def of(cls, item: QueueItem) -> QueueItemOut:
        return cls.model_validate(item, from_attributes=True)


class MediaOut(BaseModel):
    id: uuid.UUID
    kind: str
    mime: str
    bytes: int
    sha256: str
    original_name: str | None
    width: int | None
    height: int | None
    duration: float | None
    fps: float | None
    frame_count: int | None
    codec: str | None
    taken_at: datetime | None
    camera: str | None
    created_at: datetime
    status: str | None = None
    thumbnail_url: str | None = None  # signed; absent until processing has made the thumbnail

    @classmethod
    def of(cls, item: MediaItem, status: str | None = None, thumbnail_url: str | None = None) -> MediaOut:
        return cls.model_validate({**item.__dict__, "status": status, "thumbnail_url": thumbnail_url})


class DepthOut(BaseModel):
    model_id: str
    model_revision: str | None
    format: str
    width: int
    height: int
    raw_min: float | None
    raw_max: float | None
    metadata: dict
    url: str | None
    created_at: datetime


class StereoRenderOut(BaseModel):
    """A stereo video render: in progress, ready (its file is the stereo route's redirect) or
    failed."""

    layout: str
    divergence: float
    convergence: float
    codec: Literal["h264", "hevc"]
    model_id: str
    status: Literal["rendering", "ready", "failed"]
    progress: float
    attempts: int
    last_error: str | None
    started_at: datetime
    updated_at: datetime


class MediaDetail(MediaOut):
    queue: list[QueueItemOut]
    urls: dict[str, str | None]
    depth: list[DepthOut]
    stereo_renders: list[StereoRenderOut] = []


class RenderingOut(BaseModel):
    """202 from the stereo route while a video's render runs; ask again after Retry-After."""

    status: Literal["rendering"] = "rendering"
    progress: float


class MediaPageOut(BaseModel):
    items: list[MediaOut]
    next_cursor: str | None
    total: int | None = None  # with ``total=true``: every item these filters match


class NeighboursOut(BaseModel):
    previous: uuid.UUID | None  # newer
    next: uuid.UUID | None  # older


class MediaStatusesOut(BaseModel):
    """The latest queue status of each media asked for; unknown ids are left out."""

    statuses: dict[uuid.UUID, str | None]


class UploadResult(BaseModel):
    filename: str | None
    status: Literal["created", "duplicate", "rejected"]
    media_id: uuid.UUID | None = None
    queue_item_id: uuid.UUID | None = None
    queue_status: str | None = None
    error: dict | None = None


class UploadResponse(BaseModel):
    accepted: int
    rejected: int
    results: list[UploadResult]


class QueuePageOut(BaseModel):
    items: list[QueueItemOut]
    next_cursor: str | None


class QueueStatusOut(BaseModel):
    waiting: int
    active: int
    completed: int
    failed: int
    total: int


class KindCounts(BaseModel):
    photo: int
    video: int


class QueueTotalsOut(QueueStatusOut):
    cancelled: int


class QueueStatsOut(BaseModel):
    counts: dict[Status, KindCounts]
    totals: QueueTotalsOut
    throughput_per_minute: float
    completed_last_minute: int
    completed_last_hour: int
    avg_processing_seconds: float | None
    remaining: int
    eta_seconds: float | None


class SummaryRowOut(BaseModel):
    """One row per status and kind: the queue summary shape ImmichVR's queue manager serves."""

    status: Status
    kind: Kind
    items: int
    avg_processing_seconds: float | None
    oldest_queued_at: datetime | None
    last_completed_at: datetime | None
    errors: int


class WorkerStatusOut(BaseModel):
    running: bool
    paused: bool
    owner: str
    in_flight: int
    max_in_flight: int
    depth_available: bool
    depth_error: str | None
    storage_available: bool
    storage_error: str | None
    last_error: str | None
    counts: dict[str, int]
    model: str


class ModelPlace(BaseModel):
    """A depth replica that has a model loaded."""

    replica: str | None
    node: str | None  # the Ray node id
    device: str | None
    photo_decoder: Literal["nvjpeg", "pillow"] | None = Field(
        default=None, description="what decodes the photos sent to this replica as bytes")


class ModelOut(BaseModel):
    """A depth model this deployment serves."""

    id: str
    licence: str | None  # None: not one depthmill knows; its model card says
    loaded: bool  # a depth replica has it loaded and answers
    replicas: int | None  # depth replicas that have it loaded (None: the deployment is down)
    device: str | None
    where: list[ModelPlace] | None  # those replicas (None: the deployment is down)


class ModelsOut(BaseModel):
    models: list[ModelOut]
