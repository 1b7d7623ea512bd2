"""/api/media: upload, list, detail (with signed URLs), delete, depth redirect."""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse

from cluster.storage import keys as storage_keys
from cluster.ingest import IngestResult, ingest_spool
from cluster.ingest import delete_media as delete_media_and_outputs
from cluster.storage import ObjectNotFound
from db import depth as depth_maps
from db import media, queue, video_renders
from db.vocabulary import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_PRIORITY, MIN_PRIORITY, Kind, Status
from serve_app.api.auth import READ, WRITE
from serve_app.api.deps import Context, Db, Store, upload_rate_limit
from serve_app.api.errors import ApiError, documented
from serve_app.api.redirects import signed_redirect
from serve_app.api.multipart import received_files
from serve_app.api.routes import stereo as stereo_routes
from serve_app.api.routes.models import requested_model
from serve_app.api.schemas import (
    DepthOut,
    MediaDetail,
    MediaOut,
    MediaPageOut,
    MediaStatusesOut,
    NeighboursOut,
    QueueItemOut,
    StereoRenderOut,
    UploadResponse,
    UploadResult,
)

router = APIRouter(prefix="/api/media", tags=["media"])


def _result(r: IngestResult) -> UploadResult:
    if r.status == "rejected":
        return UploadResult(filename=r.name, status="rejected",
                            error={"code": r.error_code, "message": r.error})
    return UploadResult(filename=r.name, status=r.status, media_id=r.media.id,
                        queue_item_id=r.queue_item.id, queue_status=r.queue_item.status)


# The body is read by ``received_files``, not by FastAPI, so the schema is declared here.
_UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {"files": {
        "type": "array", "minItems": 1, "description": "photos and videos",
        "items": {"type": "string", "contentMediaType": "application/octet-stream"},
    }},
}}}}}


@router.post(
    "/upload", response_model=UploadResponse, dependencies=[WRITE, Depends(upload_rate_limit)],
    responses=documented(413, 415, 429, 503, 507), openapi_extra=_UPLOAD_BODY,
    summary="Upload photos and videos (multipart field `files`, repeatable)",
)
async def upload(
    ctx: Context,
    request: Request,
    model: Annotated[str, Depends(requested_model)],  # refused before the body is read
    priority: Annotated[
        int | None, Query(ge=MIN_PRIORITY, le=MAX_PRIORITY, description="override the priority")
    ] = None,
) -> UploadResponse:
    settings = ctx.settings
    if model != settings.model:
        settings = settings.model_copy(update={"model": model})
    results = []
    async with received_files(request, field_name="files", max_files=ctx.settings.max_files_per_request,
                              max_bytes=ctx.limits.max_bytes) as files:
        for received in files:
            # In this request's context, so its audit entry joins the transaction that stores it.
            ingest = partial(ingest_spool, received, db=ctx.db, storage=ctx.storage,
                             settings=settings, limits=ctx.limits, priority=priority)
            outcome = await asyncio.get_running_loop().run_in_executor(
                ctx.ingest_pool, contextvars.copy_context().run, ingest)
            results.append(_result(outcome))
    rejected = sum(r.status == "rejected" for r in results)
    if rejected == len(results):
        first = results[0].error
        status = 413 if first["code"] == "file_too_large" else 415 if first["code"] == "unsupported_media_type" else 422
        raise ApiError(status, first["code"], first["message"] if len(results) == 1 else
                       f"all {len(results)} files were rejected; first: {first['message']}")
    return UploadResponse(accepted=len(results) - rejected, rejected=rejected, results=results)


@router.get("", dependencies=[READ], response_model=MediaPageOut, responses=documented(400), summary="List media, newest first")
def list_media(
    db: Db,
    storage: Store,
    kind: Kind | None = None,
    status: Status | None = None,
    order: Annotated[media.Order, Query(
        description="`uploaded`: by upload time; `taken`: by capture date (EXIF), else upload time")] = "uploaded",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    total: Annotated[bool, Query(description="also count every item the filters match")] = False,
) -> MediaPageOut:
    page = db.run(media.list_media, kind=kind, status=status, order=order, limit=limit, cursor=cursor)
    items = [MediaOut.of(m, page.statuses.get(m.id), _url(storage, storage_keys.thumbnail(m.id)))
             for m in page.items]
    count = db.run(media.count_media, kind=kind, status=status) if total else None
    return MediaPageOut(items=items, next_cursor=page.next_cursor, total=count)


@router.get("/status", dependencies=[READ], response_model=MediaStatusesOut, summary="Latest queue status of several media")
def media_statuses(
    db: Db,
    ids: Annotated[str, Query(max_length=MAX_PAGE_SIZE * 40, description="comma-separated media ids")],
) -> MediaStatusesOut:
    try:
        wanted = {uuid.UUID(i) for i in ids.split(",") if i.strip()}
    except ValueError:
        raise ApiError(422, "invalid_ids", "ids must be comma-separated media UUIDs") from None
    if len(wanted) > MAX_PAGE_SIZE:
        raise ApiError(422, "too_many_ids", f"at most {MAX_PAGE_SIZE} ids per request")
    return MediaStatusesOut(statuses=db.run(media.latest_statuses, wanted))


def _url(storage, key: str) -> str | None:
    try:
        return storage.signed_url(key)
    except ObjectNotFound:
        return None


@router.get("/{media_id}", dependencies=[READ], response_model=MediaDetail, responses=documented(404), summary="Metadata, queue status, signed URLs")
def get_media(media_id: uuid.UUID, db: Db, storage: Store) -> MediaDetail:
    item = db.run(media.get, media_id)
    items = db.run(queue.items_for_media, media_id)
    maps = db.run(depth_maps.for_media, media_id)
    urls = {
        "original": _url(storage, item.storage_key),
        "thumbnail": _url(storage, storage_keys.thumbnail(media_id)),
        "preview": _url(storage, storage_keys.preview(media_id)),
    }
    depth = [DepthOut(**{**m.__dict__, "url": _url(storage, m.storage_key)}) for m in maps]
    for m in depth:
        name = {"png16": "depth", "preview": "depth_preview", "video": "depth_video",
                "video16": "depth_video16"}.get(m.format)
        if name and name not in urls:
            urls[name] = m.url
    latest = max(items, key=lambda i: i.queued_at).status if items else None
    stereo_renders = [StereoRenderOut(**r.__dict__)
                      for r in db.run(video_renders.for_media, media_id)]
    return MediaDetail(**MediaOut.of(item, latest).model_dump(),
                       queue=[QueueItemOut.of(i) for i in items], urls=urls, depth=depth,
                       stereo_renders=stereo_renders)


@router.get("/{media_id}/neighbours", dependencies=[READ], response_model=NeighboursOut, responses=documented(404),
            summary="The items before and after one in the list with the same filters")
def neighbours(
    media_id: uuid.UUID, db: Db, kind: Kind | None = None, status: Status | None = None,
    order: media.Order = "uploaded",
) -> NeighboursOut:
    found = db.run(media.neighbours, media_id, kind=kind, status=status, order=order)
    return NeighboursOut(previous=found.previous, next=found.next)


@router.delete("/{media_id}", dependencies=[WRITE], status_code=204, responses=documented(404), summary="Delete media, its outputs and queue items")
def delete_media(media_id: uuid.UUID, db: Db, storage: Store) -> None:
    delete_media_and_outputs(db, storage, media_id)


@router.get("/{media_id}/depth", dependencies=[READ], summary="Redirect to the depth map's signed URL",
            response_class=RedirectResponse, status_code=307, responses=documented(404, 409))
def depth_redirect(
    media_id: uuid.UUID, db: Db, storage: Store, ctx: Context,
    format: Literal["png16", "preview", "video", "video16", "gdepth"] = "png16",
    model: Annotated[str | None, Query(min_length=1, max_length=300, description=(
        "whose depth (default: DEPTHMILL_MODEL's, else any served model's)"))] = None,
):
    if format == "gdepth":  # the photo with its depth embedded: a render, made on request
        return stereo_routes.gdepth_redirect(ctx, media_id, model=model)
    db.run(media.get, media_id)
    maps = [m for m in db.run(depth_maps.for_media, media_id)
            if m.format == format and (model is None or m.model_id == model)]
    if maps:
        chosen = next((m for m in maps if m.model_id == ctx.settings.model), maps[0])
        return signed_redirect(storage.signed_url(chosen.storage_key), ctx.settings)
    which = f" from model {model}" if model else ""
    raise ApiError(404, "not_found", f"no {format} depth output{which} for media {media_id} yet")
