"""/api/media/{id}/stereo and the GDepth depth format: renders made on request from a photo and
its stored depth, cached in storage under quantised keys (bounded, least recently used evicted)
and handed out as signed-URL redirects like every other output.

Rendering takes about half a second for a preview, so the routes are plain ``def``: FastAPI runs
them in its thread pool, and numpy and Pillow release the GIL for most of the work."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import AfterValidator

from cluster.media import exports, gdepth, stereo
from cluster.media.depth_encode import decode_depth_png16
from cluster.media.stereo_video import H264_MAX_WIDTH, Codec, CodecUnavailable, choose_codec
from cluster.storage import keys as storage_keys
from cluster.work.stereo_video import MAX_ATTEMPTS, STALE_S, VideoRenderJob
from db import depth as depth_maps
from db import media, queue, renders, video_renders
from db.depth import DepthMap
from db.media import MediaItem
from serve_app.api.context import ApiContext
from serve_app.api.auth import READ, Caller, authorize
from serve_app.api.deps import Context
from serve_app.api.errors import ApiError, documented
from serve_app.api.redirects import signed_redirect
from serve_app.api.schemas import RenderingOut

router = APIRouter(prefix="/api/media", tags=["stereo"])

Size = Literal["preview", "original"]


def _within(lo: float, hi: float) -> AfterValidator:
    """A range check whose error gives the whole range (``Query(ge, le)`` names only the bound
    that failed); NaN fails it too. The bounds still go into the OpenAPI schema."""
    def check(value: float) -> float:
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo:g} and {hi:g}, got {value:g}")
        return value
    return AfterValidator(check)


def ready_depth(ctx: ApiContext, media_id: uuid.UUID, model: str | None) -> tuple[MediaItem, DepthMap]:
    """The photo and its 16-bit depth map, or the error saying why there is none to render from:
    404 unknown media, 422 a video, 409 depth not made yet, failed or cancelled."""
    item = ctx.db.run(media.get, media_id)
    if item.kind != "photo":
        raise ApiError(422, "unsupported_media",
                       "this output is made from photos; for a video ask /stereo for its "
                       "stereo video")
    return item, _stored_depth(ctx, item, "png16", model)


def _stored_depth(ctx: ApiContext, item: MediaItem, fmt: str, model: str | None) -> DepthMap:
    """The item's depth output ``fmt`` (the configured model's without ``model``, else whichever
    there is), or the 409 saying why there is none yet."""
    maps = [m for m in ctx.db.run(depth_maps.for_media, item.id)
            if m.format == fmt and (model is None or m.model_id == model)]
    if maps:
        return next((m for m in maps if m.model_id == ctx.settings.model), maps[0])
    media_id = item.id
    items = [i for i in ctx.db.run(queue.items_for_media, media_id)
             if model is None or i.model_id == model]
    which = f" from model {model}" if model else ""
    if items and items[0].status in ("failed", "cancelled"):  # newest first
        latest = items[0]
        reason = f": {latest.last_error}" if latest.status == "failed" and latest.last_error else ""
        raise ApiError(409, f"depth_{latest.status}",
                       f"the depth map{which} for media {media_id} was {latest.status}{reason}; "
                       f"retry with POST /api/queue/items/{latest.id}/retry")
    state = f" (its queue item is {items[0].status})" if items else " (it is not queued)"
    raise ApiError(409, "not_ready", f"the depth map{which} for media {media_id} is not ready yet"
                                     f"{state}; retry when it is completed")


def _photo_bytes(ctx: ApiContext, item: MediaItem, size: Size) -> bytes:
    key = storage_keys.preview(item.id) if size == "preview" else item.storage_key
    return ctx.storage.get_bytes(key)


def _unit_depth(ctx: ApiContext, depth_map: DepthMap):
    return decode_depth_png16(ctx.storage.get_bytes(depth_map.storage_key))


def serve_render(ctx: ApiContext, media_id: uuid.UUID, key: str, content_type: str,
                 make: Callable[[], bytes]) -> RedirectResponse:
    """Redirect to the cached render under ``key``, making and storing it first if it is not
    there; then evict least recently used renders until the cache fits its limit."""
    if not (ctx.db.run(renders.touch, key) and ctx.storage.exists(key)):
        data = make()
        ctx.storage.put_bytes(key, data, content_type)
        try:
            ctx.db.run(renders.record, key, media_id, len(data))
        except psycopg.errors.ForeignKeyViolation:  # the media was deleted meanwhile
            ctx.storage.delete(key)
            raise ApiError(404, "not_found", f"media {media_id} was deleted") from None
        for old in ctx.db.run(renders.evict_over, int(ctx.settings.stereo_cache_bytes), key):
            ctx.storage.delete(old)
    return signed_redirect(ctx.storage.signed_url(key), ctx.settings)


@router.get(
    "/{media_id}/stereo", dependencies=[READ], response_class=RedirectResponse, status_code=307,
    responses={**documented(404, 409, 422), 202: {
        "model": RenderingOut, "description": "a video's render is running: ask again after "
                                              "Retry-After seconds"}},
    summary="Redirect to a stereo render of a photo or video (made on first request, then cached)",
    description="A photo is rendered during the request. A video is rendered in the background: "
                "202 with its progress until it is ready, then the redirect to an MP4 at the "
                "source's frame rate with its audio, named with the layout's suffix (_SBS, _TB…).",
)
def stereo_redirect(
    media_id: uuid.UUID,
    ctx: Context,
    request: Request,
    layout: Annotated[stereo.Layout, Query(
        description="sbs, sbs-half, tb, tb-half, crosseye (right view first), anaglyph "
                    "(red-cyan), rgbd (colour beside 8-bit depth)")] = "sbs",
    divergence: Annotated[float, Query(
        description="disparity between nearest and farthest, % of width (0–10, to 0.1)",
        json_schema_extra={"minimum": 0, "maximum": stereo.MAX_DIVERGENCE},
    ), _within(0, stereo.MAX_DIVERGENCE)] = stereo.DEFAULT_DIVERGENCE,
    convergence: Annotated[float, Query(
        description="screen plane: 0 nearest … 1 farthest (to 0.05)",
        json_schema_extra={"minimum": 0, "maximum": 1},
    ), _within(0, 1)] = stereo.DEFAULT_CONVERGENCE,
    format: Annotated[Literal["jpeg", "png", "webp"], Query(
        description="photos: the file's format (a video's render is always an MP4)")] = "jpeg",
    size: Annotated[Size, Query(
        description="photos: the 1440 px preview, or the original photo (a video's render has "
                    "the video's size)")] = "preview",
    model: Annotated[str | None, Query(min_length=1, max_length=200,
                                       description="the depth model (default: the configured one)")] = None,
    codec: Annotated[Codec | None, Query(
        description=f"videos: h264 or hevc (default h264, or hevc for frames wider than "
                    f"{H264_MAX_WIDTH} px, which H.264 players do not take)")] = None,
) -> Response:
    item = ctx.db.run(media.get, media_id)
    if item.kind == "video":
        return video_stereo(ctx, item, layout, divergence, convergence, model,
                            request.state.caller, codec)
    depth_map = _stored_depth(ctx, item, "png16", model)
    divergence, convergence = storage_keys.quantised_stereo(divergence, convergence)
    key = storage_keys.stereo_render(media_id, depth_map.model_id, layout, divergence,
                                     convergence, size, stereo.EXTENSIONS[format])

    def make() -> bytes:
        rgb = stereo.upright_rgb(_photo_bytes(ctx, item, size))
        frame = stereo.render(rgb, _unit_depth(ctx, depth_map), layout, divergence, convergence)
        return stereo.encode_image(frame, format)

    return serve_render(ctx, media_id, key, stereo.CONTENT_TYPES[format], make)


RENDER_RETRY_AFTER_S = 2


def video_stereo(ctx: ApiContext, item: MediaItem, layout: stereo.Layout, divergence: float,
                 convergence: float, model: str | None, caller: Caller,
                 codec: Codec | None = None) -> Response:
    """The stereo video: 307 to it when it is ready, else 202 with its progress, starting its
    render (a background task) when nothing renders it; 409 when it failed every attempt.
    Watching a render needs ``read``; starting one, like enqueueing an item, ``write``."""
    try:
        codec = choose_codec(codec, stereo.frame_size(layout, item.width or 0, item.height or 0)[0])
    except CodecUnavailable as e:
        raise ApiError(422, "codec_unavailable", str(e)) from None
    depth16 = _stored_depth(ctx, item, "video16", model)
    divergence, convergence = storage_keys.quantised_stereo(divergence, convergence)
    stem = exports.clean_stem(item.original_name) or f"video_{exports.short_id(item.id)}"
    key = storage_keys.stereo_video_render(
        item.id, depth16.model_id, layout, divergence, convergence, codec,
        f"{stem}{exports.LAYOUT_SUFFIXES[layout]}.mp4")
    row = ctx.db.run(video_renders.get, key)
    if row is not None and row.status == "ready":
        if ctx.db.run(renders.touch, key) and ctx.storage.exists(key):
            return signed_redirect(ctx.storage.signed_url(key), ctx.settings)
    if not caller.may("write"):
        if row is None or row.status != "rendering":
            authorize(caller, "write")
        return _rendering(row)
    row, started = ctx.db.run(
        video_renders.start, key, item.id, depth16.model_id, layout, divergence, convergence,
        codec, stale_s=STALE_S, max_attempts=MAX_ATTEMPTS,
        evicted=row is not None and row.status == "ready")
    if started:
        job = VideoRenderJob(key, row.attempts, item.id, item.storage_key, depth16.storage_key,
                             layout, divergence, convergence, codec)
        if ctx.start_video_render is None:
            ctx.db.run(video_renders.fail, key, row.attempts,
                       "this gateway has no cluster to render videos on")
            row = ctx.db.run(video_renders.get, key)
        else:
            ctx.start_video_render(job)
    if row.status == "failed":
        raise ApiError(409, "render_failed",
                       f"the stereo render of media {item.id} failed {row.attempts} times, the "
                       f"last with: {row.last_error}")
    return _rendering(row)


def _rendering(row: video_renders.VideoRender) -> JSONResponse:
    return JSONResponse(RenderingOut(progress=row.progress).model_dump(), status_code=202,
                        headers={"Retry-After": str(RENDER_RETRY_AFTER_S)})


def gdepth_redirect(ctx: ApiContext, media_id: uuid.UUID, size: Size = "preview",
                    model: str | None = None) -> RedirectResponse:
    """``GET /api/media/{id}/depth?format=gdepth``: the photo as a JPEG with its depth embedded
    as Google depth XMP. The preview is a JPEG already and keeps its bytes; anything else is
    decoded upright and encoded."""
    item, depth_map = ready_depth(ctx, media_id, model)
    key = storage_keys.gdepth_render(media_id, depth_map.model_id, size)

    def make() -> bytes:
        photo = _photo_bytes(ctx, item, size)
        if size != "preview":
            photo = gdepth.to_jpeg(stereo.upright_rgb(photo), quality=95)
        return gdepth.embed(photo, _unit_depth(ctx, depth_map))

    return serve_render(ctx, media_id, key, "image/jpeg", make)
