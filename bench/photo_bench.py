"""The photo path as the depth replica runs it, without Ray: encoded photos in, depth maps and
renditions out (``cluster.model.photos``: nvJPEG decode on a GPU, the model, the preview resized
and JPEG-encoded there), the depth PNG, its colour WebP and the thumbnail's WebP encoded by a
pool of CPU processes beside it, as the processing tasks would. In the same run, on the same
photos: the naive path (Pillow's full decode, the transformers processor, fp32, one photo at a
time, as ImmichVR's AI service runs) and the model alone on ready batches.

    python -m bench.photo_bench --model small --photos 512 --json docs/results/photo_gpu.json

Made for a GPU machine (it needs torch, torchvision, transformers, Pillow, scikit-image and PyAV,
not Ray or Postgres); on a CPU it runs the Pillow fallback, slowly: ``--photos 8 --size
1600x1200``. ``--model tiny|small|base|large`` builds random weights in the real checkpoints'
shapes (throughput does not depend on the weights' values).
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.report import write_json


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------- photos


def _base_photo(width: int, height: int) -> np.ndarray:
    from skimage import data as samples

    coffee = Image.fromarray(samples.coffee()).resize((width, height), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(0).normal(0, 6, (height, width, 3))
    return np.clip(np.asarray(coffee, np.float32) + noise, 0, 255).astype(np.uint8)


_BASE: np.ndarray | None = None


def _encode_photo(args: tuple[int, int, int]) -> bytes:
    global _BASE
    i, width, height = args
    if _BASE is None or _BASE.shape[:2] != (height, width):
        _BASE = _base_photo(width, height)
    # Each photo the base shifted by its own offset: distinct bytes, the same entropy as a photo.
    buf = io.BytesIO()
    Image.fromarray(np.roll(_BASE, 37 * i, axis=1)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_photos(count: int, width: int, height: int, workers: int) -> list[bytes]:
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_encode_photo, [(i, width, height) for i in range(count)]))


# ---------------------------------------------------------------------------------- the paths


def model_dir(architecture: str, root: Path) -> Path:
    from cluster.model.core import ARCHITECTURES, build_random_model

    if architecture not in ARCHITECTURES:
        return Path(architecture)  # a directory saved with save_pretrained
    target = root / architecture
    if not (target / "config.json").exists():
        build_random_model(architecture).save_pretrained(target)
    return target


def naive(directory: Path, photos: list[bytes], seconds: float) -> tuple[int, float]:
    """Photos done one at a time and the seconds they took, stopping after ``seconds``."""
    from transformers import AutoModelForDepthEstimation

    from cluster.model.core import _image_processor

    processor = _image_processor()
    net = AutoModelForDepthEstimation.from_pretrained(directory, dtype=torch.float32)
    net = net.to("cuda" if torch.cuda.is_available() else "cpu").eval()

    @torch.inference_mode()
    def run(content: bytes) -> None:
        img = Image.open(io.BytesIO(content)).convert("RGB")
        inputs = processor(images=img, return_tensors="pt").to(net.device)
        depth = net(**inputs).predicted_depth
        processor.post_process_depth_estimation(
            type("Out", (), {"predicted_depth": depth})(), target_sizes=[img.size[::-1]])

    run(photos[0])  # warm up
    synchronize()
    done, started = 0, time.perf_counter()
    while done < 3 or (time.perf_counter() - started < seconds and done < len(photos)):
        run(photos[done % len(photos)])
        done += 1
    synchronize()
    return done, time.perf_counter() - started


def model_only(core, batch: int, seconds: float, size: tuple[int, int]) -> float:
    """Images a second through the model's forward pass alone, on a ready batch of photos of
    ``size`` (height, width)."""
    from cluster.model.contract import target_size

    shape = target_size(*size)
    pixels = torch.rand((batch, 3, *shape), device=core.device).to(core.dtype)

    @torch.inference_mode()
    def run() -> None:
        core.forward(pixel_values=pixels).predicted_depth.float().cpu()

    run()
    synchronize()
    done, started = 0, time.perf_counter()
    while done < 2 or time.perf_counter() - started < seconds:
        run()
        done += 1
    synchronize()
    return done * batch / (time.perf_counter() - started)


def _warm_encoder(_: int) -> None:
    import cluster.media.decode  # noqa: F401 - imported once per process, before the clock
    import cluster.media.depth_encode  # noqa: F401


def _encode_outputs(args: tuple[int, np.ndarray, np.ndarray, bytes, str]) -> int:
    """What a processing task does with the replica's answer: the depth PNG and its colour
    WebP, the thumbnail's WebP, all written with the preview JPEG."""
    from cluster.media.decode import thumbnail_webp
    from cluster.media.depth_encode import encode_depth_png16, encode_depth_preview

    i, depth, thumbnail, preview, out = args
    files = {
        "depth.png": encode_depth_png16(depth).png16,
        "depth.webp": encode_depth_preview(depth),
        "thumbnail.webp": thumbnail_webp(Image.fromarray(thumbnail)),
        "preview.jpg": preview,
    }
    for name, data in files.items():
        Path(out, f"{i}.{name}").write_bytes(data)
    return sum(len(d) for d in files.values())


def photo_path(core, photos: list[bytes], size: tuple[int, int], batch: int, concurrent: int,
               encoders: int, out: str) -> dict:
    """Every photo through ``depth_for_photos`` in batches (``concurrent`` at once, as the
    replica runs ``max_concurrent_batches``), each batch's answers encoded and written by the
    process pool while the next batches run. Timed from the first batch to the last file."""
    from cluster.model.contract import target_size
    from cluster.model.photos import decode_photos, depth_for_photos

    decode_photos(photos[:2], core.device)  # warm up the decoder, the model and the encoder
    depth_for_photos(core, photos[:2], [None, None])
    synchronize()
    batches = [list(range(s, min(s + batch, len(photos)))) for s in range(0, len(photos), batch)]
    gpu_seconds = 0.0
    lock = threading.Lock()

    def run(indices: list[int]):
        nonlocal gpu_seconds
        started = time.perf_counter()
        answers = depth_for_photos(core, [photos[i] for i in indices],
                                   [target_size(*size)] * len(indices))
        with lock:
            gpu_seconds += time.perf_counter() - started
        return indices, answers

    written, failed, decoders = 0, 0, set()
    # The encoders' processes are started before the GPU threads: forked later, they would copy
    # a process whose threads hold CUDA and import locks.
    cpu = ProcessPoolExecutor(encoders, mp_context=multiprocessing.get_context("forkserver"))
    list(cpu.map(_warm_encoder, range(encoders)))
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrent) as gpu, cpu:
        pending: deque = deque(gpu.submit(run, b) for b in batches[:concurrent])
        encodes = []
        next_batch = concurrent
        while pending:
            indices, answers = pending.popleft().result()
            if next_batch < len(batches):
                pending.append(gpu.submit(run, batches[next_batch]))
                next_batch += 1
            for i, answer in zip(indices, answers):
                decoders.add(answer.decoder)
                if not answer.depth.ok:
                    failed += 1
                    continue
                encodes.append(cpu.submit(_encode_outputs, (
                    i, answer.depth.depth, answer.thumbnail, answer.preview_jpeg, out)))
        for e in encodes:
            written += e.result()
    seconds = time.perf_counter() - started
    return {"photos_per_s": len(photos) / seconds, "seconds": seconds, "failed": failed,
            "bytes_written": written, "replica_busy_s": gpu_seconds,
            "decoder": sorted(d for d in decoders if d)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small")
    parser.add_argument("--photos", type=int, default=512)
    parser.add_argument("--size", default="4000x3000", help="photo size, WIDTHxHEIGHT")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--concurrent", type=int, default=2, help="batches in flight at once")
    parser.add_argument("--encoders", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--naive-seconds", type=float, default=20)
    parser.add_argument("--model-seconds", type=float, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))

    from cluster.model.core import DepthEstimator
    from cluster.model.photos import gpu_codec_available

    results: dict = {"model": args.model, "photos": args.photos, "size": args.size,
                     "batch": args.batch, "concurrent": args.concurrent,
                     "encoders": args.encoders, "torch": torch.__version__,
                     "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                     "cpus": os.cpu_count()}
    made = time.perf_counter()
    photos = make_photos(args.photos, width, height, max(1, os.cpu_count() or 1))
    print(f"  {len(photos)} photos made in {time.perf_counter() - made:.1f} s "
          f"({sum(map(len, photos)) / len(photos) / 1e6:.1f} MB each)", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        directory = model_dir(args.model, Path(tmp))
        core = DepthEstimator(str(directory), dtype=args.dtype, compile=args.compile,
                              max_batch_size=args.batch)
        results.update(dtype=core.info.dtype, device=core.info.device,
                       gpu_codec=gpu_codec_available(core.device))
        results["model_only_images_per_s"] = model_only(core, args.batch, args.model_seconds,
                                                        (height, width))
        print(f"  model only: {results['model_only_images_per_s']:.1f} images/s", file=sys.stderr)
        out = Path(tmp, "out")
        out.mkdir()
        results["photo_path"] = photo_path(core, photos, (height, width), args.batch,
                                           args.concurrent, args.encoders, str(out))
        print(f"  photo path: {results['photo_path']['photos_per_s']:.1f} photos/s",
              file=sys.stderr)
        del core
        done, seconds = naive(directory, photos, args.naive_seconds)
        results["naive_photos_per_s"] = done / seconds
        print(f"  naive: {results['naive_photos_per_s']:.2f} photos/s", file=sys.stderr)
    path_rate = results["photo_path"]["photos_per_s"]
    results["path_over_naive"] = path_rate / results["naive_photos_per_s"]
    results["path_over_model"] = path_rate / results["model_only_images_per_s"]
    print(f"\n{'path':<34} {'photos/s':>9}\n"
          f"{'model only (ready batches)':<34} {results['model_only_images_per_s']:>9.1f}\n"
          f"{'photo path (decode→depth→files)':<34} {path_rate:>9.1f}\n"
          f"{'naive (one at a time, fp32)':<34} {results['naive_photos_per_s']:>9.2f}\n"
          f"path / naive {results['path_over_naive']:.1f}×, path / model "
          f"{results['path_over_model']:.2f}; decoder {results['photo_path']['decoder']}, "
          f"{results['device']} {results['dtype']}")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
