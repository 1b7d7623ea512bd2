"""12 MP JPEG → model-ready tensor: depthmill's path against the naive one.

    python -m bench.decode_bench --json bench/results/decode.json

depthmill: ``decode_for_model`` (reduced-size DCT decode just above the model input, EXIF
orientation) then the model core's ``preprocess`` (bicubic resize to 518×686, normalise).
naive: a full PIL decode then the transformers Depth Anything image processor, as ImmichVR's AI
service does it. Images/s on one core (one process) and on all cores (one process per core).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

from bench.report import write_json


def make_jpeg(path: Path, width: int = 4000, height: int = 3000) -> None:
    from devkit.media_files import jpeg_bytes, large_photo

    path.write_bytes(jpeg_bytes(large_photo(width, height)))


def _fast(content: bytes, model) -> None:
    from cluster.model.contract import target_size
    from cluster.media.decode import decode_for_model

    rgb = decode_for_model(content)
    model.preprocess([rgb], target_size(*rgb.shape[:2]))


def _naive(content: bytes, processor) -> None:
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(content)).convert("RGB")
    processor(images=img, return_tensors="pt")


def _worker(kind: str, content: bytes, seconds: float, out) -> None:
    import torch

    torch.set_num_threads(1)
    if kind == "depthmill":
        from cluster.model.core import DepthEstimator

        state = DepthEstimator("tiny")
        run = _fast
    else:
        from cluster.model.core import _image_processor

        state = _image_processor()
        run = _naive
    run(content, state)  # warm up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(content, state)
        done += 1
    out.put(done / (time.perf_counter() - start))


def measure(kind: str, content: bytes, processes: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(kind, content, seconds, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    rates = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return float(sum(rates))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "12mp.jpg"
        make_jpeg(path)
        content = path.read_bytes()
    cores = os.cpu_count() or 1
    results: dict = {"image": "4000x3000 JPEG", "bytes": len(content), "cpus": cores, "images_per_s": {}}
    for kind in ("naive", "depthmill"):
        results["images_per_s"][kind] = {
            "one_core": measure(kind, content, 1, args.seconds),
            "all_cores": measure(kind, content, cores, args.seconds),
        }
        print(f"  {kind}: {results['images_per_s'][kind]}", file=sys.stderr)
    fast, naive = results["images_per_s"]["depthmill"], results["images_per_s"]["naive"]
    results["speedup_one_core"] = fast["one_core"] / naive["one_core"]
    results["speedup_all_cores"] = fast["all_cores"] / naive["all_cores"]
    print(f"\n{'path':>10} {'1 core img/s':>13} {f'{cores} cores img/s':>15}")
    for kind in ("naive", "depthmill"):
        r = results["images_per_s"][kind]
        print(f"{kind:>10} {r['one_core']:>13.1f} {r['all_cores']:>15.1f}")
    print(f"\nspeedup per core: {results['speedup_one_core']:.2f}x (target ≥ 2.5x)")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
