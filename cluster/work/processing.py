"""Processing one queue item: fetch → decode → depth → encode → store. Plain functions, no Ray:
``cluster.work.tasks`` runs them as Ray tasks and the scheduler records their :class:`Outcome`.

Errors are sorted here, where their meaning is known: corrupt media fails at once, other network
trouble is retryable, and an unreachable depth service or object store gives the item back
untouched (the outage is not the item's fault; the scheduler waits for the service instead).
"""

from __future__ import annotations

import json
import logging
import queue
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from PIL import Image

from cluster.storage import keys as storage_keys
from cluster.media.depth_encode import (
    Depth16VideoWriter,
    DepthVideoWriter,
    encode_depth_png16,
    encode_depth_preview,
)
from cluster.media.temporal import TemporalStabiliser
from cluster.model.contract import DepthResult, PhotoDepth, target_size
from cluster.media.decode import (
    MODEL_SHORT_SIDE,
    VideoFrame,
    decode_photo,
    poster_frame,
    preview_jpeg,
    sample_video_frames,
    thumbnail_webp,
    upright_size,
    video_frame_rate,
)
from cluster.media.probe import MediaRejected
from cluster.config.settings import Settings
from cluster.storage import ObjectNotFound, Storage, StorageFull, StorageUnavailable, download
from db.depth import NewDepthMap
from db.queue import ClaimedItem, Lease

log = logging.getLogger(__name__)

# depth(images, output_sizes) -> results; the Serve handle in production, the core in tests.
DepthFn = Callable[[Sequence[np.ndarray], Sequence[tuple[int, int] | None]], list[DepthResult]]
# photo_depth(encoded photo, output_size) -> its depth and renditions, decoded by the replica.
PhotoDepthFn = Callable[[bytes, tuple[int, int] | None], PhotoDepth]


class DepthUnavailable(RuntimeError):
    """The depth service could not be reached; the item did not really run."""


class PermanentError(RuntimeError):
    """Retrying cannot help (corrupt media, missing original, the model rejects the input)."""


# The stages a photo's time is reported in (Outcome.stages); "record" is the scheduler's.
# "depth" is the time spent waiting for the answer beyond the encodes overlapped with it;
# "depth_call", the whole call, overlaps the others and is not summed with them.
STAGES = ("fetch", "decode", "depth", "encode", "store")


class Stages:
    """Seconds spent in each stage of one item, summed (two perf_counter calls a stage: cheap
    enough to keep on in production, so the e2e benchmark and an operator see the same split)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


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
    stages: dict[str, float] = field(default_factory=dict)  # photos: STAGES and "depth_call"

    @classmethod
    def of(cls, item: ClaimedItem, status: str, **fields) -> Outcome:
        return cls(item.lease, item.kind, item.media_id, status, **fields)


def process_item(
    item: ClaimedItem, settings: Settings, storage: Storage, depth: DepthFn, model_revision=None,
    photo_depth: PhotoDepthFn | None = None,
) -> Outcome:
    """``photo_depth``: where given, photos go to it as their bytes, to be decoded with their
    depth (in the depth replica, on its GPU); otherwise they are decoded here."""
    started = time.perf_counter()
    stages = Stages()
    try:
        if item.kind == "photo" and photo_depth is not None:
            outputs = _process_photo_bytes(item, settings, storage, photo_depth, model_revision,
                                           stages)
        elif item.kind == "photo":
            outputs = _process_photo(item, settings, storage, depth, model_revision, stages)
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
                      seconds=time.perf_counter() - started, stages=stages.seconds)


def _unavailable(item: ClaimedItem, dependency: str, error: str, started: float) -> Outcome:
    return Outcome.of(item, "unavailable", error=error, seconds=time.perf_counter() - started,
                      dependency=dependency)


def _output_size(size: tuple[int, int], settings: Settings) -> tuple[int, int]:
    """The depth map's (height, width) for a photo of ``size``, whichever process decodes it."""
    if settings.depth_resolution == "original":
        return size
    return target_size(*size)


def _checked(results: list[DepthResult]) -> list[DepthResult]:
    for r in results:
        if not r.ok:
            raise PermanentError(f"depth model rejected the input: {r.error}")
    return results


def store_depth_outputs(
    storage: Storage, media_id: uuid.UUID, model_id: str, revision: str | None,
    depth: np.ndarray, metadata: dict | None = None, stages: Stages | None = None,
) -> list[NewDepthMap]:
    """Encode and store a depth map (16-bit PNG + colour preview); the rows that record them.
    The queue path and the bulk job both write outputs through here."""
    stages = stages or Stages()
    with stages.timed("encode"):
        encoded = encode_depth_png16(depth)
        preview = encode_depth_preview(depth)
    png_key = storage_keys.depth(media_id, model_id, "png16")
    preview_key = storage_keys.depth(media_id, model_id, "preview")
    with stages.timed("store"):
        storage.put_bytes(png_key, encoded.png16, "image/png")
        storage.put_bytes(preview_key, preview, "image/webp")
    common = dict(media_id=media_id, model_id=model_id, model_revision=revision)
    return [
        NewDepthMap(**common, format="png16", storage_key=png_key, width=encoded.width,
                    height=encoded.height, raw_min=encoded.raw_min, raw_max=encoded.raw_max,
                    metadata=metadata or {}),
        NewDepthMap(**common, format="preview", storage_key=preview_key, width=encoded.width,
                    height=encoded.height),
    ]


def _store_renditions(item: ClaimedItem, storage: Storage, image: Image.Image) -> None:
    """Thumbnail and preview for a gallery (Immich's sizes) from the preview-sized image: the
    thumbnail is cut from it."""
    _put_renditions(item, storage, _encode_renditions(image), Stages())


def _encode_renditions(image: Image.Image) -> tuple[bytes, bytes]:
    return thumbnail_webp(image), preview_jpeg(image)


def _put_renditions(item: ClaimedItem, storage: Storage, encoded: tuple[bytes, bytes],
                   stages: Stages) -> None:
    thumbnail, preview = encoded
    with stages.timed("store"):
        storage.put_bytes(storage_keys.thumbnail(item.media_id), thumbnail, "image/webp")
        storage.put_bytes(storage_keys.preview(item.media_id), preview, "image/jpeg")


def _fetch_photo(item: ClaimedItem, storage: Storage, stages: Stages, read):
    """The photo's bytes and what ``read`` makes of them (its decode, or its header's size); a
    photo that cannot be read fails for good."""
    with stages.timed("fetch"):
        content = storage.get_bytes(item.storage_key)
    with stages.timed("decode"):
        try:
            return content, read(content)
        except (OSError, SyntaxError, ValueError) as e:
            raise PermanentError(f"cannot decode the photo: {e}") from None


def _process_photo(item, settings, storage, depth, revision, stages: Stages) -> list[NewDepthMap]:
    """One decode feeds the model and the renditions, and the renditions are encoded while the
    depth call is out: the task's core does that work instead of waiting on the deployment. They
    are stored only once the depth answer is in, so an item the model rejects leaves none."""
    _, photo = _fetch_photo(item, storage, stages, decode_photo)
    with ThreadPoolExecutor(1, thread_name_prefix="depthmill-depth") as pool:
        asked = time.perf_counter()
        answer = pool.submit(depth, [photo.model], [_output_size(photo.size, settings)])
        with stages.timed("encode"):
            renditions = _encode_renditions(photo.gallery)
        # Only the wait beyond the encode counts as the depth stage: the time the core idled.
        with stages.timed("depth"):
            (result,) = _checked(answer.result())
        stages.seconds["depth_call"] = time.perf_counter() - asked
    revision = revision or result.revision
    outputs = store_depth_outputs(storage, item.media_id, item.model_id, revision, result.depth,
                                  stages=stages)
    _put_renditions(item, storage, renditions, stages)
    return outputs


def _process_photo_bytes(item, settings, storage, photo_depth: PhotoDepthFn, revision,
                         stages: Stages) -> list[NewDepthMap]:
    """The photo decoded by the depth replica (nvJPEG on a GPU): its bytes go there, its depth,
    preview JPEG and thumbnail pixels come back, and the PNG and WebP encodes are done here, on
    the task's core. Only the header is read here, for the depth map's size."""
    content, size = _fetch_photo(item, storage, stages, upright_size)
    asked = time.perf_counter()
    with stages.timed("depth"):
        answer = photo_depth(content, _output_size(size, settings))
    stages.seconds["depth_call"] = time.perf_counter() - asked
    if not answer.depth.ok:
        error = answer.depth.error or ""
        raise PermanentError(error if error.startswith("cannot decode") else
                             f"depth model rejected the input: {error}")
    with stages.timed("encode"):
        thumbnail = thumbnail_webp(Image.fromarray(answer.thumbnail))
    outputs = store_depth_outputs(storage, item.media_id, item.model_id,
                                  revision or answer.depth.revision, answer.depth.depth,
                                  stages=stages)
    _put_renditions(item, storage, (thumbnail, answer.preview_jpeg), stages)
    return outputs


# The video path is a pipeline: a thread decodes ahead (DECODE_AHEAD frames), VIDEO_IN_FLIGHT
# depth calls of VIDEO_BATCH frames each are outstanding at once (each frame its own request, so
# the deployment's batching sees several calls' frames together), this thread stabilises the
# answers in order, and a thread behind it encodes them. Whatever the video's length, at most
# DECODE_AHEAD + (VIDEO_IN_FLIGHT + 2) × VIDEO_BATCH frames are in memory.
VIDEO_BATCH = 16
VIDEO_IN_FLIGHT = 3
DECODE_AHEAD = 32

FRAME_COLUMNS = ["timestamp", "scale", "shift", "range_min", "range_max", "cut"]
FRAME_ENCODING = (
    "aligned = scale * raw + shift; unit = clip((aligned - range_min) / (range_max - range_min), "
    "0, 1); video16 stores round(unit * 65535), video round(unit * 255); raw = (range_min + unit "
    "* (range_max - range_min) - shift) / scale"
)


@dataclass
class VideoDepth:
    """What :func:`encode_video_depth` made: the files, and what the rows record of them."""

    video16: Path
    video: Path
    frames_json: Path
    count: int = 0
    width: int = 0
    height: int = 0
    preview_width: int = 0
    preview_height: int = 0
    first: DepthResult | None = None
    first_timestamp: float = 0.0
    last_timestamp: float = 0.0
    raw_min: float = float("inf")
    raw_max: float = float("-inf")
    cuts: int = 0


def frame_rate_cap(settings: Settings) -> float | None:
    """The most frames a second given depth: VIDEO_MAX_FPS, or VIDEO_SAMPLE_FPS when that is set
    (previews); None: every frame."""
    caps = [f for f in (settings.video_max_fps, settings.video_sample_fps) if f]
    return min(caps) if caps else None


def _frame_output_size(frame: VideoFrame, settings: Settings) -> tuple[int, int]:
    # From the source's size, not the (possibly reduced) decoded frame's.
    h, w = frame.source_size if frame.source_size != (0, 0) else frame.rgb.shape[:2]
    return (h, w) if settings.depth_resolution == "original" else target_size(h, w)


def encode_video_depth(
    frames: Iterable[VideoFrame], depth: DepthFn, settings: Settings, out_dir: Path,
    *, batch: int = VIDEO_BATCH, in_flight: int = VIDEO_IN_FLIGHT, ahead: int = DECODE_AHEAD,
) -> VideoDepth:
    """Depth for every frame given, stabilised over time (:mod:`cluster.media.temporal`), as the
    16-bit FFV1 video, the 8-bit H.264 preview (same timestamps) and the per-frame records (a
    JSON file written as it goes). Streams: memory does not grow with the number of frames."""
    out = VideoDepth(out_dir / "depth16.mkv", out_dir / "depth.mp4", out_dir / "frames.json")
    stabiliser = TemporalStabiliser()
    writer16 = writer8 = encoder = None
    with out.frames_json.open("w") as log_file:
        log_file.write(json.dumps({"version": 1, "encoding": FRAME_ENCODING,
                                   "columns": FRAME_COLUMNS})[:-1] + ', "frames": [')
        answers = _depth_in_order(frames, depth, settings, batch, in_flight, ahead)
        try:
            for frame, result in answers:
                if writer16 is None:
                    out.height, out.width = result.depth.shape
                    writer16 = Depth16VideoWriter(out.video16, out.width, out.height)
                    writer8 = DepthVideoWriter(out.video, out.width, out.height)
                    out.preview_width, out.preview_height = writer8.width, writer8.height
                    out.first, out.first_timestamp = result, frame.timestamp
                    encoder = _Behind(_encode_into(writer16, writer8), ahead=batch)
                stable = stabiliser.push(result.depth, frame.rgb)
                encoder.put((stable, frame.timestamp))
                log_file.write(("," if out.count else "") + json.dumps([
                    round(frame.timestamp, 6), stable.scale, stable.shift, stable.range_min,
                    stable.range_max, int(stable.cut)]))
                out.count += 1
                out.cuts += stable.cut
                out.last_timestamp = frame.timestamp
                out.raw_min = min(out.raw_min, result.raw_min)
                out.raw_max = max(out.raw_max, result.raw_max)
            if encoder is not None:
                encoder.close()  # the last frames encoded; an encoder's error is raised here
        finally:
            answers.close()  # stops the decode thread and the depth calls on the way out
            if encoder is not None:
                encoder.abandon()
            for writer in (writer16, writer8):
                if writer is not None:
                    writer.close()
        log_file.write("]}")
    return out


def _encode_into(writer16: Depth16VideoWriter, writer8: DepthVideoWriter):
    def encode(item) -> None:
        stable, timestamp = item
        writer16.write(stable.quantised(), timestamp)
        writer8.write_unit(stable.unit, timestamp)
    return encode


class _Behind:
    """``fn`` applied to each item put, in order, in a thread of its own (the encoders, behind
    the stabiliser: PyAV encodes without the GIL). At most ``ahead`` items wait."""

    def __init__(self, fn, ahead: int) -> None:
        self._fn, self._items = fn, queue.Queue(maxsize=ahead)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="depthmill-encode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._items.get()) is not _DONE:
            if self._error is None:
                try:
                    self._fn(item)
                except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
                    self._error = e

    def put(self, item) -> None:
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait for every item put; raise what ``fn`` raised, if it did."""
        if self._thread.is_alive():
            self._items.put(_DONE)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop without raising (on the way out of an error): the rest is not encoded."""
        self._error = self._error or RuntimeError("abandoned")
        if self._thread.is_alive():
            self._items.put(_DONE)
            self._thread.join()


def _depth_in_order(frames, depth, settings, batch, in_flight, ahead):
    """(frame, result) in order, with the decode running ahead in a thread and up to
    ``in_flight`` depth calls outstanding."""
    pending: deque = deque()
    with ThreadPoolExecutor(in_flight, thread_name_prefix="depthmill-depth") as pool:
        try:
            for chunk in _decoded_chunks(_read_ahead(frames, ahead), batch):
                sizes = [_frame_output_size(f, settings) for f in chunk]
                pending.append((chunk, pool.submit(depth, [f.rgb for f in chunk], sizes)))
                while len(pending) > in_flight:
                    yield from _answered(*pending.popleft())
            while pending:
                yield from _answered(*pending.popleft())
        finally:
            for _, future in pending:
                future.cancel()


def _answered(chunk, future):
    results = _checked(future.result())
    if len(results) != len(chunk):
        raise PermanentError(f"depth answered {len(results)} of {len(chunk)} frames")
    yield from zip(chunk, results)


_DONE = object()


def _read_ahead(iterable: Iterable, ahead: int) -> Iterator:
    """``iterable``'s items, produced by a thread up to ``ahead`` items before they are asked
    for; its exceptions are raised here. Stopping early stops the thread."""
    items: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(iterable)
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put((_DONE, e))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="depthmill-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _process_video(item, settings, storage, depth, revision) -> list[NewDepthMap]:
    """Depth for every frame (up to VIDEO_MAX_FPS), stabilised, as a lossless 16-bit video, an
    8-bit preview and per-frame records, plus the first frame's depth as the poster PNG.

    Not resumable: a retried video starts over. The stabiliser's state runs through the whole
    video, and the two encoders write one file each; resuming would mean segment files, their
    concatenation and the stabiliser's state checkpointed at each segment. A retry repeats the
    work, but writes the same outputs."""
    with tempfile.TemporaryDirectory(prefix="depthmill-") as tmp:
        original = Path(tmp) / "original"
        download(storage, item.storage_key, original)
        try:
            poster = poster_frame(original)
            source_fps = video_frame_rate(original)
        except (av.error.FFmpegError, IndexError) as e:  # IndexError: no video stream left
            raise PermanentError(f"cannot decode the video: {e}") from None
        _store_renditions(item, storage, poster)
        cap = frame_rate_cap(settings)
        frames = sample_video_frames(original, fps=cap, max_frames=settings.video_max_frames,
                                     short_side=MODEL_SHORT_SIDE)
        video = encode_video_depth(frames, depth, settings, Path(tmp))
        if video.first is None:
            raise PermanentError("the video has no decodable frames")
        revision = revision or video.first.revision  # what the replica that answered had loaded
        fps = min(source_fps, cap) if source_fps and cap else source_fps or cap
        if not fps:
            span = video.last_timestamp - video.first_timestamp
            fps = (video.count - 1) / span if video.count > 1 and span > 0 else None
        duration = video.last_timestamp - video.first_timestamp + (1 / fps if fps else 0.0)
        keys = {fmt: storage_keys.depth(item.media_id, item.model_id, fmt)
                for fmt in ("video16", "video", "frames")}
        for fmt, path, mime in (("frames", video.frames_json, "application/json"),
                                ("video16", video.video16, "video/x-matroska"),
                                ("video", video.video, "video/mp4")):
            with path.open("rb") as f:
                storage.put(keys[fmt], f, mime)
        common = dict(media_id=item.media_id, model_id=item.model_id, model_revision=revision)
        described = {
            "frame_count": video.count, "fps": fps, "source_fps": source_fps,
            "duration": round(duration, 6), "first_timestamp": video.first_timestamp,
            "last_timestamp": video.last_timestamp, "stabilised": True, "shot_cuts": video.cuts,
            "frames_key": keys["frames"], "frame_columns": FRAME_COLUMNS,
        }
        outputs = store_depth_outputs(storage, item.media_id, item.model_id, revision,
                                      video.first.depth,
                                      {"poster_timestamp": video.first_timestamp})
        outputs.append(NewDepthMap(
            **common, format="video16", storage_key=keys["video16"], width=video.width,
            height=video.height, raw_min=video.raw_min, raw_max=video.raw_max,
            metadata={**described, "codec": "ffv1", "pix_fmt": "gray16le",
                      "encoding": FRAME_ENCODING},
        ))
        outputs.append(NewDepthMap(
            **common, format="video", storage_key=keys["video"], width=video.preview_width,
            height=video.preview_height, raw_min=video.raw_min, raw_max=video.raw_max,
            metadata={**described, "codec": "h264", "pix_fmt": "yuv420p"},
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
