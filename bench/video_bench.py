"""The video path: throughput against the model alone, flicker with and without stabilisation,
and peak memory against the video's length.

    python -m bench.video_bench --json bench/results/video.json [--frames 90] [--size 320x240]

1. frames/s of ``process_item`` on a synthetic video (decode ahead, depth calls in flight,
   stabilise, FFV1 + H.264 encode, store) with the real model core (``--model tiny``: random
   weights in Depth Anything's shape) as its DepthFn, against a loop of ``predict`` calls over
   the same frames already decoded in memory (the model's own pace: the most the path can do).
2. Flicker (mean absolute frame-to-frame change of the unit depth on the static background) of
   a synthetic sequence whose raw disparity has a random scale and shift per frame, normalised
   per frame vs stabilised.
3. Peak RSS of a child process running ``process_item`` on a shorter and a longer video (a fake
   depth function, maps at the video's size, so the pipeline's own memory is what is measured).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import av
import numpy as np

from bench.report import write_json
from cluster.config.settings import Settings
from cluster.media.temporal import TemporalStabiliser, flicker, per_frame_unit
from cluster.model.contract import DepthResult, target_size
from cluster.storage import LocalStorage
from cluster.storage import keys as storage_keys
from cluster.storage.signing import UrlSigner
from cluster.work.processing import frame_rate_cap, process_item
from cluster.media.decode import MODEL_SHORT_SIDE, sample_video_frames
from db.queue import ClaimedItem
from devkit import media_files


def synthetic_video(path: Path, frames: int, size: tuple[int, int], fps: int = 30) -> Path:
    """A camera panning across a photo with a bright square crossing it."""
    w, h = size
    scene = np.asarray(media_files.photo("coffee").resize((w * 2, h)))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            x = (i * 2) % w
            frame = scene[:, x:x + w].copy()
            sx = (i * 4) % (w - 40)
            frame[h // 3:h // 3 + 40, sx:sx + 40] = (240, 40, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def claimed(storage: LocalStorage, path: Path) -> ClaimedItem:
    key = f"{storage_keys.ORIGINALS}{uuid.uuid4().hex}"
    storage.put_bytes(key, path.read_bytes(), "video/mp4")
    now = datetime.now(UTC)
    return ClaimedItem(id=uuid.uuid4(), media_id=uuid.uuid4(), model_id="tiny", kind="video",
                       bytes=path.stat().st_size, mime="video/mp4", storage_key=key, priority=0,
                       attempts=1, max_attempts=3, lease_owner="bench", lease_expires_at=now,
                       queued_at=now)


def throughput(root: Path, frames: int, size: tuple[int, int], model: str, device: str) -> dict:
    from cluster.model.core import DepthEstimator

    estimator = DepthEstimator(model, cache_dir=root / "models", device=device)
    settings = Settings(home=root, database_url="postgresql://unused", model=model)
    video = synthetic_video(root / "bench.mp4", frames, size)
    storage = LocalStorage(root / "objects", UrlSigner(b"k" * 32), base_url="http://bench")
    estimator.predict([np.zeros((size[1], size[0], 3), np.uint8)])  # warm up

    start = time.perf_counter()
    outcome = process_item(claimed(storage, video), settings, storage, estimator.predict)
    path_s = time.perf_counter() - start
    assert outcome.status == "completed", outcome.error
    count = next(m for m in outcome.outputs if m.format == "video16").metadata["frame_count"]

    decoded = list(sample_video_frames(video, fps=frame_rate_cap(settings), max_frames=None,
                                       short_side=MODEL_SHORT_SIDE))
    sizes = [target_size(*f.source_size) for f in decoded]
    start = time.perf_counter()
    for i in range(0, len(decoded), 16):
        estimator.predict([f.rgb for f in decoded[i:i + 16]], sizes[i:i + 16])
    model_s = time.perf_counter() - start
    return {"frames": count, "size": f"{size[0]}x{size[1]}", "model": model,
            "device": str(estimator.device), "path_fps": count / path_s,
            "model_fps": len(decoded) / model_s, "path_vs_model": model_s / path_s}


def flicker_figures(frames: int = 120, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    h, w = 144, 192
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    bg = 1 + 0.4 * y / h + 0.2 * np.sin(x / 7) * np.cos(y / 5) + 0.1 * rng.random((h, w))
    colour = np.clip(rng.integers(60, 200, 3) + rng.integers(-20, 20, (h, w, 3)), 0, 255)
    stabiliser = TemporalStabiliser()
    stable, plain = [], []
    for t in range(frames):
        true, rgb = bg.copy(), colour.astype(np.uint8)
        xs = slice(8 + t % 150, 40 + t % 150)
        true[40:80, xs], rgb[40:80, xs] = 3.0, (250, 30, 30)
        raw = rng.uniform(0.5, 2) * true + rng.uniform(-1, 1) + rng.normal(0, 0.001, (h, w))
        raw.ravel()[rng.integers(0, h * w, 8)] += rng.uniform(2, 9, 8)  # spurious peaks
        raw = raw.astype(np.float32)
        stable.append(stabiliser.push(raw, rgb).unit)
        plain.append(per_frame_unit(raw))
    mask = np.ones((h, w), bool)
    mask[36:84] = False

    def mean(units):
        return float(np.mean([flicker(a, b, mask) for a, b in zip(units, units[1:])]))

    per_frame, stabilised = mean(plain), mean(stable)
    return {"frames": frames, "per_frame_flicker": per_frame, "stabilised_flicker": stabilised,
            "ratio": stabilised / per_frame}


def rss_child(frames: int, size: tuple[int, int], fps: int) -> None:
    """Run in a child: process a video of ``frames`` with a fake depth; print peak RSS (MB)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        video = synthetic_video(root / "v.mp4", frames, size, fps)
        settings = Settings(home=root, database_url="postgresql://unused", model="tiny",
                            depth_resolution="original")
        storage = LocalStorage(root / "objects", UrlSigner(b"k" * 32), base_url="http://bench")

        def depth(images, sizes):
            return [DepthResult(np.tile(np.linspace(0.5, 4, s[1], dtype=np.float32), (s[0], 1))
                                * (1 + 0.1 * np.sin(i)), 0.5, 4.4) for i, s in enumerate(sizes)]

        before = _status_mb("VmHWM")
        outcome = process_item(claimed(storage, video), settings, storage, depth)
        assert outcome.status == "completed", outcome.error
        peak = _status_mb("VmHWM")
        print(json.dumps({"frames": frames, "size": f"{size[0]}x{size[1]}", "fps": fps,
                          "seconds": frames / fps, "rss_before_mb": before, "peak_rss_mb": peak}))


def _status_mb(field: str) -> float:
    """A /proc/self/status figure in MB. VmHWM, not ru_maxrss: that survives exec, so a child
    started from a large parent reports the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_figures(short: int, long: int, size: str, fps: int) -> list[dict]:
    out = []
    for frames in (short, long):
        done = subprocess.run([sys.executable, "-m", "bench.video_bench", "--rss-child",
                               str(frames), "--rss-size", size, "--rss-fps", str(fps)],
                              capture_output=True, text=True, check=True)
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rss-frames", default="150,1500", help="shorter,longer")
    parser.add_argument("--rss-size", default="160x120", help="frame size of the memory runs")
    parser.add_argument("--rss-fps", type=int, default=30, help="frame rate of the memory runs")
    parser.add_argument("--rss-only", action="store_true", help="only the memory runs")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rss_size = tuple(int(v) for v in args.rss_size.split("x"))
    if args.rss_child:
        rss_child(args.rss_child, rss_size, args.rss_fps)
        return 0
    short, long = (int(v) for v in args.rss_frames.split(","))
    memory = rss_figures(short, long, args.rss_size, args.rss_fps)
    print(f"peak RSS of process_item (fake depth, {args.rss_size} at {args.rss_fps} fps)")
    for m in memory:
        print(f"  {m['frames']:6d} frames ({m['seconds']:.0f} s) {m['peak_rss_mb']:8.1f} MB "
              f"(at start {m['rss_before_mb']:.1f} MB)")
    if args.rss_only:
        write_json(args.json, {"memory": memory})
        return 0
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        speed = throughput(Path(tmp), args.frames, size, args.model, args.device)
    flick = flicker_figures()

    print(f"video path, {speed['frames']} frames {speed['size']}, model {speed['model']} on "
          f"{speed['device']}")
    print(f"  {'process_item (whole path)':32} {speed['path_fps']:8.1f} frames/s")
    print(f"  {'model core alone (same frames)':32} {speed['model_fps']:8.1f} frames/s")
    print(f"  {'path / model':32} {speed['path_vs_model']:8.2f}")
    print(f"flicker over {flick['frames']} frames (background, mean |Δ| of unit depth)")
    print(f"  {'per-frame normalisation':32} {flick['per_frame_flicker']:8.4f}")
    print(f"  {'stabilised':32} {flick['stabilised_flicker']:8.4f}  "
          f"({flick['ratio']:.2f} of per-frame)")
    write_json(args.json, {"throughput": speed, "flicker": flick, "memory": memory})
    return 0


if __name__ == "__main__":
    sys.exit(main())
