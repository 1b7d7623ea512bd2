"""process_item without Ray or a model: real photos and videos in local storage, a fake depth
function, and the outcome each kind of trouble gets (completed, failed, retry, unavailable)."""

from __future__ import annotations

import io
import json
import threading
import time
import tracemalloc
import uuid
from datetime import UTC, datetime

import av
import numpy as np
import pytest
from PIL import Image

from cluster.config.settings import Settings
from cluster.media.decode import VideoFrame
from cluster.media.depth_encode import read_depth16_video
from cluster.media.temporal import raw_from_unit
from cluster.model.contract import DepthResult, target_size
from cluster.storage import LocalStorage, StorageFull, StorageUnavailable
from cluster.storage import keys as storage_keys
from cluster.storage.signing import UrlSigner
from cluster.work.processing import (
    STAGES,
    DepthUnavailable,
    encode_video_depth,
    process_item,
)
from db.queue import ClaimedItem
from devkit import media_files

MODEL = "tiny"


class FakeDepth:
    """Stands in for the depth deployment: a gradient at each requested size, or ``fail``
    raised, or every result rejected with ``reject``."""

    def __init__(self, fail: BaseException | None = None, reject: str | None = None) -> None:
        self.fail, self.reject = fail, reject
        self.calls: list[tuple[list[tuple[int, ...]], list[tuple[int, int] | None]]] = []

    def __call__(self, images, sizes) -> list[DepthResult]:
        self.calls.append(([im.shape for im in images], list(sizes)))
        if self.fail is not None:
            raise self.fail
        results = []
        for image, size in zip(images, sizes):
            if self.reject is not None:
                results.append(DepthResult(None, error=self.reject))
                continue
            h, w = size or image.shape[:2]
            depth = np.tile(np.linspace(0.5, 4.0, w, dtype=np.float32), (h, 1))
            results.append(DepthResult(depth, float(depth.min()), float(depth.max())))
        return results


class FlakyStorage(LocalStorage):
    """Local storage whose reads or writes raise ``error`` (an unreachable store, a full disk)."""

    def __init__(self, *args, read_error=None, write_error=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.read_error, self.write_error = read_error, write_error

    def open(self, key):
        if self.read_error is not None:
            raise self.read_error
        return super().open(key)

    def put(self, key, data, content_type):
        if self.write_error is not None and not key.startswith(storage_keys.ORIGINALS):
            raise self.write_error
        return super().put(key, data, content_type)


@pytest.fixture
def storage(tmp_path) -> FlakyStorage:
    return FlakyStorage(tmp_path / "objects", UrlSigner(b"k" * 32), base_url="http://api")


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path, database_url="postgresql://unused", model=MODEL,
                    video_sample_fps=4, video_max_frames=20)


@pytest.fixture(scope="module")
def photo_bytes() -> bytes:
    return media_files.jpeg_bytes(media_files.photo("astronaut"))


@pytest.fixture(scope="module")
def video_bytes() -> bytes:
    return media_files.video_bytes(seconds=2, fps=10, size=(160, 120))


def stored_item(storage, kind: str, content: bytes) -> ClaimedItem:
    """A claimed item whose original is in ``storage``."""
    key = f"{storage_keys.ORIGINALS}{uuid.uuid4().hex}"
    storage.put_bytes(key, content, "application/octet-stream")
    now = datetime.now(UTC)
    return ClaimedItem(
        id=uuid.uuid4(), media_id=uuid.uuid4(), model_id=MODEL, kind=kind, bytes=len(content),
        mime="image/jpeg" if kind == "photo" else "video/mp4", storage_key=key, priority=0,
        attempts=1, max_attempts=3, lease_owner="scheduler-test", lease_expires_at=now,
        queued_at=now)


def processing_outputs(storage, item: ClaimedItem) -> list[str]:
    return [k for k in storage_keys.written_by_processing(item.media_id, MODEL) if storage.exists(k)]


@pytest.fixture(params=["photo", "video"])
def media(request, photo_bytes, video_bytes) -> tuple[str, bytes]:
    return request.param, photo_bytes if request.param == "photo" else video_bytes


# ------------------------------------------------------------------------------ completed


def test_a_photo_completes_with_its_depth_map_preview_and_renditions(storage, settings, photo_bytes):
    item, depth = stored_item(storage, "photo", photo_bytes), FakeDepth()
    outcome = process_item(item, settings, storage, depth, model_revision="rev1")
    assert outcome.status == "completed", outcome.error
    assert outcome.error is None and outcome.dependency is None and outcome.seconds > 0
    assert (outcome.lease, outcome.kind, outcome.media_id) == (item.lease, "photo", item.media_id)
    assert depth.calls == [([(512, 512, 3)], [target_size(512, 512)])]
    assert {m.format for m in outcome.outputs} == {"png16", "preview"}
    for m in outcome.outputs:
        assert (m.media_id, m.model_id, m.model_revision) == (item.media_id, MODEL, "rev1")
        assert storage.exists(m.storage_key)
        assert (m.height, m.width) == target_size(512, 512)
    png = next(m for m in outcome.outputs if m.format == "png16")
    assert png.raw_min == pytest.approx(0.5) and png.raw_max == pytest.approx(4.0)
    assert set(processing_outputs(storage, item)) == {
        storage_keys.thumbnail(item.media_id), storage_keys.preview(item.media_id),
        storage_keys.depth(item.media_id, MODEL, "png16"),
        storage_keys.depth(item.media_id, MODEL, "preview")}


def test_a_photo_reports_the_time_of_each_stage(storage, settings, photo_bytes):
    outcome = process_item(stored_item(storage, "photo", photo_bytes), settings, storage,
                           FakeDepth())
    assert set(outcome.stages) == {*STAGES, "depth_call"}
    assert all(s > 0 for s in outcome.stages.values())
    assert sum(outcome.stages[s] for s in STAGES) <= outcome.seconds
    assert outcome.stages["depth"] <= outcome.stages["depth_call"]


def test_a_photo_at_original_resolution_asks_for_its_own_size(storage, photo_bytes, tmp_path):
    settings = Settings(home=tmp_path, database_url="postgresql://unused", model=MODEL,
                        depth_resolution="original")
    depth = FakeDepth()
    outcome = process_item(stored_item(storage, "photo", photo_bytes), settings, storage, depth)
    assert outcome.status == "completed", outcome.error
    assert depth.calls[0][1] == [(512, 512)]


def test_a_video_completes_with_a_depth_video_and_a_poster_depth_map(storage, settings, video_bytes):
    item, depth = stored_item(storage, "video", video_bytes), FakeDepth()
    outcome = process_item(item, settings, storage, depth)
    assert outcome.status == "completed", outcome.error
    assert outcome.kind == "video"
    assert {m.format for m in outcome.outputs} == {"png16", "preview", "video", "video16"}
    video = next(m for m in outcome.outputs if m.format == "video")
    assert video.metadata["frame_count"] == sum(len(shapes) for shapes, _ in depth.calls) > 1
    assert video.metadata["fps"] == 4  # VIDEO_SAMPLE_FPS set: sampled, as for a preview
    assert video.raw_min == pytest.approx(0.5) and video.raw_max == pytest.approx(4.0)
    assert (video.height, video.width) == target_size(120, 160)
    assert next(m for m in outcome.outputs if m.format == "png16").metadata == {
        "poster_timestamp": 0.0}
    assert set(processing_outputs(storage, item)) == set(
        storage_keys.written_by_processing(item.media_id, MODEL))


def source_timestamps(content: bytes) -> list[float]:
    with av.open(io.BytesIO(content)) as container:
        return [round(float(f.time), 3) for f in container.decode(video=0)]


def output_timestamps(storage, key: str) -> list[float]:
    with storage.open(key) as f, av.open(io.BytesIO(f.read())) as container:
        return [round(float(f.time), 3) for f in container.decode(video=0)]


def every_frame_settings(tmp_path, **kw) -> Settings:
    return Settings(home=tmp_path, database_url="postgresql://unused", model=MODEL, **kw)


def test_a_video_gets_depth_for_every_frame_at_the_source_timestamps(storage, tmp_path,
                                                                     video_bytes):
    item, depth = stored_item(storage, "video", video_bytes), FakeDepth()
    outcome = process_item(item, every_frame_settings(tmp_path), storage, depth)
    assert outcome.status == "completed", outcome.error
    source = source_timestamps(video_bytes)
    assert len(source) == 20
    rows = {m.format: m for m in outcome.outputs}
    for fmt in ("video16", "video"):
        assert output_timestamps(storage, rows[fmt].storage_key) == source, fmt
        meta = rows[fmt].metadata
        assert (meta["frame_count"], meta["fps"], meta["duration"]) == (20, 10.0, pytest.approx(2.0))
    assert (rows["video16"].height, rows["video16"].width) == target_size(120, 160)
    # The per-frame records recover the raw depth from the 16-bit video.
    with storage.open(rows["video16"].metadata["frames_key"]) as f:
        log = json.load(f)
    assert [round(r[0], 3) for r in log["frames"]] == source
    with storage.open(rows["video16"].storage_key) as f:
        path = tmp_path / "d.mkv"
        path.write_bytes(f.read())
    cols = log["columns"]
    for (t, values), rec in zip(read_depth16_video(path), log["frames"]):
        r = dict(zip(cols, rec))
        raw = raw_from_unit(values, r["scale"], r["shift"], r["range_min"], r["range_max"])
        expected = np.tile(np.linspace(0.5, 4.0, values.shape[1]), (values.shape[0], 1))
        inside = (values > 0) & (values < 65535)
        assert inside.mean() > 0.95
        assert np.abs(raw - expected)[inside].max() < 1e-3


def test_the_frame_rate_cap_drops_frames_evenly(storage, tmp_path, video_bytes):
    item = stored_item(storage, "video", video_bytes)
    outcome = process_item(item, every_frame_settings(tmp_path, video_max_fps=5), storage,
                           FakeDepth())
    assert outcome.status == "completed", outcome.error
    rows = {m.format: m for m in outcome.outputs}
    expected = [round(0.2 * i, 3) for i in range(10)]
    for fmt in ("video16", "video"):
        assert output_timestamps(storage, rows[fmt].storage_key) == expected
        assert (rows[fmt].metadata["frame_count"], rows[fmt].metadata["fps"]) == (10, 5.0)


def test_several_depth_calls_are_in_flight_and_answers_stay_in_order(tmp_path):
    rgb = np.zeros((24, 32, 3), np.uint8)
    settings = every_frame_settings(tmp_path, depth_resolution="original")
    lock, state = threading.Lock(), {"now": 0, "most": 0}
    fake = FakeDepth()

    def slow_depth(images, sizes):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return fake(images, sizes)

    frames = (VideoFrame(i, i / 30, rgb, (24, 32)) for i in range(160))
    video = encode_video_depth(frames, slow_depth, settings, tmp_path, batch=8, in_flight=3)
    assert video.count == 160 and state["most"] == 3
    log = json.loads((tmp_path / "frames.json").read_text())
    assert [r[0] for r in log["frames"]] == [round(i / 30, 6) for i in range(160)]


def test_a_depth_failure_mid_video_stops_the_decode_and_depth_threads(tmp_path):
    rgb = np.zeros((24, 32, 3), np.uint8)
    settings = every_frame_settings(tmp_path, depth_resolution="original")
    calls = []

    def failing(images, sizes):
        calls.append(len(images))
        if len(calls) == 4:
            raise ConnectionError("replica died")
        return FakeDepth()(images, sizes)

    before = {t.name for t in threading.enumerate()}
    frames = (VideoFrame(i, i / 30, rgb, (24, 32)) for i in range(10_000))
    with pytest.raises(ConnectionError, match="replica died"):
        encode_video_depth(frames, failing, settings, tmp_path, batch=8, in_flight=2)
    assert {t.name for t in threading.enumerate()} == before
    assert len(calls) < 10  # it stopped soon after, not at the end of the stream


def test_an_encoder_failure_is_raised_and_stops_the_threads(tmp_path, monkeypatch):
    from cluster.media import depth_encode

    written = []

    def write(self, values, timestamp):
        written.append(timestamp)
        if len(written) == 20:
            raise OSError("disk gone")

    monkeypatch.setattr(depth_encode.Depth16VideoWriter, "write", write)
    rgb = np.zeros((24, 32, 3), np.uint8)
    before = {t.name for t in threading.enumerate()}
    frames = (VideoFrame(i, i / 30, rgb, (24, 32)) for i in range(10_000))
    with pytest.raises(OSError, match="disk gone"):
        encode_video_depth(frames, FakeDepth(), every_frame_settings(
            tmp_path, depth_resolution="original"), tmp_path, batch=8, in_flight=2)
    assert {t.name for t in threading.enumerate()} == before
    assert len(written) == 20


def test_a_long_video_streams_in_bounded_memory(tmp_path):
    """Thousands of small frames through decode-ahead, in-flight depth calls, the stabiliser and
    both encoders: the traced peak does not grow with the length."""
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    settings = every_frame_settings(tmp_path, depth_resolution="original")

    def frames(n):
        for i in range(n):
            yield VideoFrame(i, i / 30, rgb, (24, 32))

    def run(n: int) -> tuple[int, int]:
        out = tmp_path / str(n)
        out.mkdir()
        tracemalloc.start()
        try:
            video = encode_video_depth(frames(n), FakeDepth(), settings, out)
            return video.count, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    (short, short_peak), (long, long_peak) = run(150), run(2000)
    assert (short, long) == (150, 2000)
    assert long_peak < short_peak * 1.25 + 256 * 1024


def test_a_photo_at_original_resolution_gets_depth_at_its_full_upright_size(storage, tmp_path):
    """Not at the size the photo was decoded at for the model (a 2000×1500 photo is reduced to
    1000×750 for it)."""
    settings = Settings(home=tmp_path, database_url="postgresql://unused", model=MODEL,
                        depth_resolution="original")
    content = media_files.exif_jpeg(media_files.large_photo(2000, 1500), 6)
    depth = FakeDepth()
    outcome = process_item(stored_item(storage, "photo", content), settings, storage, depth)
    assert outcome.status == "completed", outcome.error
    assert depth.calls == [([(1000, 750, 3)], [(2000, 1500)])]


# ---------------------------------------------------------- photos decoded by the depth replica


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    from cluster.model.core import DepthEstimator

    return DepthEstimator("tiny", cache_dir=tmp_path_factory.mktemp("models"))


class ReplicaPhotoDepth:
    """The depth replica's photo path (cluster.model.photos) with the tiny model, in-process."""

    def __init__(self, core, fail: BaseException | None = None) -> None:
        self.core, self.fail, self.calls = core, fail, []

    def __call__(self, content: bytes, size):
        from cluster.model.photos import depth_for_photos

        self.calls.append(size)
        if self.fail is not None:
            raise self.fail
        (answer,) = depth_for_photos(self.core, [content], [size])
        return answer


def test_a_photo_sent_as_bytes_completes_with_the_outputs_of_one_decoded_here(storage, settings,
                                                                              core):
    content = media_files.exif_jpeg(media_files.large_photo(2000, 1500), 6)  # upright 1500×2000
    item, photo_depth = stored_item(storage, "photo", content), ReplicaPhotoDepth(core)
    worker = FakeDepth()
    outcome = process_item(item, settings, storage, worker, photo_depth=photo_depth)
    assert outcome.status == "completed", outcome.error
    assert worker.calls == [] and photo_depth.calls == [target_size(2000, 1500)]
    assert set(outcome.stages) == {*STAGES, "depth_call"}
    png = next(m for m in outcome.outputs if m.format == "png16")
    assert (png.height, png.width) == target_size(2000, 1500)
    assert set(processing_outputs(storage, item)) == {
        storage_keys.thumbnail(item.media_id), storage_keys.preview(item.media_id),
        storage_keys.depth(item.media_id, MODEL, "png16"),
        storage_keys.depth(item.media_id, MODEL, "preview")}
    thumbnail = Image.open(io.BytesIO(storage.get_bytes(storage_keys.thumbnail(item.media_id))))
    preview = Image.open(io.BytesIO(storage.get_bytes(storage_keys.preview(item.media_id))))
    # Upright, as the photo, and the sizes the tasks' own renditions get (Pillow's thumbnail).
    assert (thumbnail.format, thumbnail.size) == ("WEBP", (187, 250))
    assert (preview.format, preview.size) == ("JPEG", (1080, 1440))


def test_a_photo_sent_as_bytes_fails_as_one_decoded_here(storage, settings, core, photo_bytes):
    not_a_photo = stored_item(storage, "photo", b"not a photo" * 100)
    photo_depth = ReplicaPhotoDepth(core)
    outcome = process_item(not_a_photo, settings, storage, FakeDepth(), photo_depth=photo_depth)
    assert outcome.status == "failed" and outcome.error.startswith("cannot decode the photo")
    assert photo_depth.calls == []  # its header is read here: it never left the task
    # A header that reads, with the data cut short: the replica's decode fails it.
    truncated = stored_item(storage, "photo", photo_bytes[: len(photo_bytes) // 2])
    outcome = process_item(truncated, settings, storage, FakeDepth(), photo_depth=photo_depth)
    assert outcome.status == "failed" and outcome.error.startswith("cannot decode the photo")
    assert photo_depth.calls == [target_size(512, 512)]
    assert processing_outputs(storage, truncated) == []


def test_a_photo_sent_as_bytes_to_an_unreachable_replica_is_given_back(storage, settings, core,
                                                                       photo_bytes):
    item = stored_item(storage, "photo", photo_bytes)
    outcome = process_item(item, settings, storage, FakeDepth(), photo_depth=ReplicaPhotoDepth(
        core, fail=DepthUnavailable("no replicas")))
    assert outcome.status == "unavailable" and outcome.dependency == "depth"
    assert processing_outputs(storage, item) == []


# ------------------------------------------------------------------------------ failed



@pytest.mark.parametrize("kind", ["photo", "video"])
def test_corrupt_media_fails_at_once(storage, settings, kind):
    content = b"this is not a " + kind.encode() + b"\n" * 4000
    item, depth = stored_item(storage, kind, content), FakeDepth()
    outcome = process_item(item, settings, storage, depth)
    assert outcome.status == "failed", outcome.error
    assert outcome.outputs == [] and outcome.error
    assert depth.calls == []  # never reached the model
    assert processing_outputs(storage, item) == []


def test_a_truncated_photo_fails(storage, settings, photo_bytes):
    item = stored_item(storage, "photo", photo_bytes[:200])
    outcome = process_item(item, settings, storage, FakeDepth())
    assert outcome.status == "failed", outcome.error


def test_a_truncated_video_fails(storage, settings, video_bytes):
    item = stored_item(storage, "video", video_bytes[:3000])
    outcome = process_item(item, settings, storage, FakeDepth())
    assert outcome.status == "failed", outcome.error


def test_a_missing_original_fails(storage, settings, media):
    kind, content = media
    item = stored_item(storage, kind, content)
    storage.delete(item.storage_key)
    outcome = process_item(item, settings, storage, FakeDepth())
    assert outcome.status == "failed"
    assert "original is missing" in outcome.error and item.storage_key in outcome.error


def test_input_the_model_rejects_fails(storage, settings, media):
    kind, content = media
    item = stored_item(storage, kind, content)
    outcome = process_item(item, settings, storage, FakeDepth(reject="too small"))
    assert outcome.status == "failed"
    assert "rejected" in outcome.error and "too small" in outcome.error
    assert not any(storage.exists(storage_keys.depth(item.media_id, MODEL, f))
                   for f in ("png16", "preview", "video", "video16", "frames"))


# ------------------------------------------------------------------------------ retry


@pytest.mark.parametrize(("error", "says"), [
    (ConnectionError("reset by peer"), "transient error: ConnectionError"),
    (TimeoutError("slow"), "transient error: TimeoutError"),
    (ValueError("a bug"), "unexpected error: ValueError"),
])
def test_other_trouble_is_retried(storage, settings, media, error, says):
    kind, content = media
    outcome = process_item(stored_item(storage, kind, content), settings, storage,
                           FakeDepth(fail=error))
    assert outcome.status == "retry"
    assert outcome.error.startswith(says) and outcome.outputs == []
    assert outcome.dependency is None


# ------------------------------------------------------------------------------ unavailable


def test_an_unreachable_depth_service_gives_the_item_back(storage, settings, media):
    kind, content = media
    outcome = process_item(stored_item(storage, kind, content), settings, storage,
                           FakeDepth(fail=DepthUnavailable("no replicas")))
    assert outcome.status == "unavailable" and outcome.dependency == "depth"
    assert outcome.error == "depth service unavailable: no replicas"
    assert outcome.outputs == []


def test_an_unreachable_store_gives_the_item_back(storage, settings, media):
    kind, content = media
    item = stored_item(storage, kind, content)
    storage.read_error = StorageUnavailable("connection refused")
    depth = FakeDepth()
    outcome = process_item(item, settings, storage, depth)
    assert outcome.status == "unavailable" and outcome.dependency == "storage"
    assert outcome.error == "storage unavailable: connection refused"
    assert depth.calls == []


@pytest.mark.parametrize(("error", "says"), [
    (StorageUnavailable("timed out"), "storage unavailable: timed out"),
    (StorageFull("no space left"), "storage full: no space left"),
])
def test_a_store_that_cannot_take_the_outputs_gives_the_item_back(storage, settings, media,
                                                                  error, says):
    kind, content = media
    item = stored_item(storage, kind, content)
    storage.write_error = error
    outcome = process_item(item, settings, storage, FakeDepth())
    assert outcome.status == "unavailable" and outcome.dependency == "storage"
    assert outcome.error == says and outcome.outputs == []



def _photo_item(storage: LocalStorage) -> ClaimedItem:
    content = media_files.jpeg_bytes(media_files.photo("coffee"))
    media_id = uuid.uuid4()
    key = f"originals/{media_id}.jpg"
    storage.put_bytes(key, content, "image/jpeg")
    now = datetime.now(UTC)
    return ClaimedItem(id=uuid.uuid4(), media_id=media_id, model_id="tiny", kind="photo",
                       bytes=len(content), mime="image/jpeg", storage_key=key, priority=0,
                       attempts=1, max_attempts=3, lease_owner="test", lease_expires_at=now,
                       queued_at=now)


def test_depth_map_rows_record_the_revision_the_model_answered_with(tmp_path):
    # The queue path passed no revision and recorded NULL, though the replica had loaded (and the
    # bulk job recorded) a pinned one; the rows take it from the results.
    storage = LocalStorage(tmp_path / "objects", UrlSigner(b"k" * 32))
    settings = Settings(home=tmp_path, model="tiny")

    def depth(images, sizes):
        return [DepthResult(np.ones(size or im.shape[:2], np.float32), 1.0, 1.0, revision="abc123")
                for im, size in zip(images, sizes)]

    outcome = process_item(_photo_item(storage), settings, storage, depth)
    assert outcome.status == "completed", outcome.error
    assert outcome.outputs and {m.model_revision for m in outcome.outputs} == {"abc123"}
