"""Processing one queue item: fetch → decode → depth → encode → store. Plain functions, no Ray:
``cluster.work.tasks`` runs them as Ray tasks and the scheduler records their :class:`Outcome`.

Errors are sorted here, where their meaning is known: corrupt media fails at once, other network
trouble is retryable, and an unreachable depth service or object store gives the item back
untouched (the outage is not the item's fault; the scheduler waits for the service instead).
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from PIL import Image

from cluster.storage import keys as storage_keys
from cluster.media.depth_encode import DepthVideoWriter, encode_depth_png16, encode_depth_preview
from cluster.model.contract import DepthResult, target_size
from cluster.media.decode import (
    decode_for_model,
    gallery_image,
    poster_frame,
    preview_jpeg,
    sample_video_frames,
    thumbnail_webp,
)
from cluster.media.probe import MediaRejected
from cluster.config.settings import Settings
from cluster.storage import ObjectNotFound, Storage, StorageFull, StorageUnavailable
from db.depth import NewDepthMap
from db.queue import ClaimedItem, Lease

log = logging.getLogger(__name__)

# depth(images, output_sizes) -> results; the Serve handle in production, the core in tests.
DepthFn = Callable[[Sequence[np.ndarray], Sequence[tuple[int, int] | None]], list[DepthResult]]


class DepthUnavailable(RuntimeError):
    """The depth service could not be reached; the item did not really run."""


class PermanentError(RuntimeError):
    """Retrying cannot help (corrupt media, missing original, the model rejects the input)."""


@dataclass(frozen=True)
class Outcome:
    lease: Lease
    kind: str
    media_id: uuid.UUID
    status: str  # completed | failed | retry | unavailable
    outputs: list[NewDepthMap] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    dependency: str | None = None  # for "unavailable": which service was down (depth | storage)

    @classmethod
    def of(cls, item: ClaimedItem, status: str, **fields) -> Outcome:
        return cls(item.lease, item.kind, item.media_id, status, **fields)


def process_item(
    item: ClaimedItem, settings: Settings, storage: Storage, depth: DepthFn, model_revision=None
) -> Outcome:
    started = time.perf_counter()
    try:
        if item.kind == "photo":
            outputs = _process_photo(item, settings, storage, depth, model_revision)
        else:
            outputs = _process_video(item, settings, storage, depth, model_revision)
        status, error = "completed", None
    except DepthUnavailable as e:
        return _unavailable(item, "depth", f"depth service unavailable: {e}", started)
    except StorageUnavailable as e:
        return _unavailable(item, "storage", f"storage unavailable: {e}", started)
    except StorageFull as e:
        return _unavailable(item, "storage", f"storage full: {e}", started)
    except (PermanentError, MediaRejected) as e:
        outputs, status, error = [], "failed", str(e)
    except ObjectNotFound as e:
        outputs, status, error = [], "failed", f"original is missing from storage ({e.key})"
    except (ConnectionError, TimeoutError, OSError) as e:
        outputs, status, error = [], "retry", f"transient error: {type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - a bug or an unknown fault: record it, retry
        log.exception("processing %s failed", item.id)
        outputs, status, error = [], "retry", f"unexpected error: {type(e).__name__}: {e}"
    return Outcome.of(item, status, outputs=outputs, error=error,
                      seconds=time.perf_counter() - started)


def _unavailable(item: ClaimedItem, dependency: str, error: str, started: float) -> Outcome:
    return Outcome.of(item, "unavailable", error=error, seconds=time.perf_counter() - started,
                      dependency=dependency)


def _output_size(rgb: np.ndarray, settings: Settings) -> tuple[int, int]:
    if settings.depth_resolution == "original":
        return rgb.shape[:2]
    return target_size(*rgb.shape[:2])


def _checked(results: list[DepthResult]) -> list[DepthResult]:
    for r in results:
        if not r.ok:
            raise PermanentError(f"depth model rejected the input: {r.error}")
    return results


def store_depth_outputs(
    storage: Storage, media_id: uuid.UUID, model_id: str, revision: str | None,
    depth: np.ndarray, metadata: dict | None = None,
) -> list[NewDepthMap]:
    """Encode and store a depth map (16-bit PNG + colour preview); the rows that record them.
    The queue path and the bulk job both write outputs through here."""
    encoded = encode_depth_png16(depth)
    png_key = storage_keys.depth(media_id, model_id, "png16")
    preview_key = storage_keys.depth(media_id, model_id, "preview")
    storage.put_bytes(png_key, encoded.png16, "image/png")
    storage.put_bytes(preview_key, encode_depth_preview(depth), "image/webp")
    common = dict(media_id=media_id, model_id=model_id, model_revision=revision)
    return [
        NewDepthMap(**common, format="png16", storage_key=png_key, width=encoded.width,
                    height=encoded.height, raw_min=encoded.raw_min, raw_max=encoded.raw_max,
                    metadata=metadata or {}),
        NewDepthMap(**common, format="preview", storage_key=preview_key, width=encoded.width,
                    height=encoded.height),
    ]


def _store_renditions(item: ClaimedItem, storage: Storage, source) -> None:
    """Thumbnail and preview for a gallery (Immich's sizes), made on the way through from one
    decode: the thumbnail is cut from the preview-sized image."""
    image = source if isinstance(source, Image.Image) else gallery_image(source)
    storage.put_bytes(storage_keys.thumbnail(item.media_id), thumbnail_webp(image), "image/webp")
    storage.put_bytes(storage_keys.preview(item.media_id), preview_jpeg(image), "image/jpeg")


def _process_photo(item, settings, storage, depth, revision) -> list[NewDepthMap]:
    content = storage.get_bytes(item.storage_key)
    try:
        rgb = decode_for_model(content)
    except (OSError, SyntaxError, ValueError) as e:
        raise PermanentError(f"cannot decode the photo: {e}") from None
    (result,) = _checked(depth([rgb], [_output_size(rgb, settings)]))
    revision = revision or result.revision
    outputs = store_depth_outputs(storage, item.media_id, item.model_id, revision, result.depth)
    _store_renditions(item, storage, content)
    return outputs


def _process_video(item, settings, storage, depth, revision) -> list[NewDepthMap]:
    with tempfile.TemporaryDirectory(prefix="depthmill-") as tmp:
        original = Path(tmp) / "original"
        with storage.open(item.storage_key) as src, original.open("wb") as dst:
            while chunk := src.read(1024 * 1024):
                dst.write(chunk)
        try:
            poster = poster_frame(original)
        except (av.error.FFmpegError, IndexError) as e:  # IndexError: no video stream left
            raise PermanentError(f"cannot decode the video: {e}") from None
        _store_renditions(item, storage, poster)
        out_path = Path(tmp) / "depth.mp4"
        first: DepthResult | None = None
        frames = sample_video_frames(
            original, fps=settings.video_sample_fps, max_frames=settings.video_max_frames
        )
        writer = None
        for chunk in _decoded_chunks(frames, 16):
            # One request per frame, all in flight at once: the deployment batches them.
            images = [f.rgb for f in chunk]
            results = _checked(depth(images, [_output_size(im, settings) for im in images]))
            if writer is None:
                h, w = results[0].depth.shape
                writer = DepthVideoWriter(out_path, w, h)
                first = results[0]
            for result, frame in zip(results, chunk):
                writer.write(result.depth, frame.timestamp)
        if writer is None or first is None:
            raise PermanentError("the video has no decodable frames")
        frame_meta = writer.close()
        revision = revision or first.revision  # what the replica that answered had loaded
        video_key = storage_keys.depth(item.media_id, item.model_id, "video")
        with out_path.open("rb") as f:
            storage.put(video_key, f, "video/mp4")
        outputs = store_depth_outputs(storage, item.media_id, item.model_id, revision,
                                      first.depth, {"poster_timestamp": 0.0})
        outputs.append(NewDepthMap(
            media_id=item.media_id, model_id=item.model_id, model_revision=revision,
            format="video", storage_key=video_key, width=writer.width, height=writer.height,
            raw_min=min(f["raw_min"] for f in frame_meta),
            raw_max=max(f["raw_max"] for f in frame_meta),
            metadata={"frames": frame_meta, "sample_fps": settings.video_sample_fps},
        ))
        return outputs


def _decoded_chunks(frames, size: int):
    """Chunks of frames; a frame PyAV cannot decode fails the video, as a corrupt photo does."""
    try:
        yield from _chunks(frames, size)
    except av.error.FFmpegError as e:
        raise PermanentError(f"cannot decode the video: {e}") from None


def _chunks(iterable, size: int):
    chunk = []
    for x in iterable:
        chunk.append(x)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
