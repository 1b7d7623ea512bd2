"""Depth model throughput: model-only by batch size, through the Serve deployment with concurrent
callers, and the naive baseline (full decode + transformers processor + fp32 model, one image at
a time, as ImmichVR's AI service does).

    python -m bench.depth_bench --model small --json bench/results/depth_small.json

``--model tiny|small|base|large`` builds random weights in the real checkpoints' shapes (no network
needed; throughput does not depend on the weights' values). Inputs are 4:3 photos (model input
518×686). On a GPU the model runs in fp16 (``--dtype``), on CPU in fp32.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.report import write_json


def _timed(fn, seconds: float, min_iters: int = 2) -> tuple[int, float]:
    fn()  # warm up (and compile, with --compile)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    iters, start = 0, time.perf_counter()
    while iters < min_iters or time.perf_counter() - start < seconds:
        fn()
        iters += 1
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return iters, time.perf_counter() - start


def model_dir(architecture: str, root: Path) -> Path:
    from cluster.model.core import build_random_model

    target = root / architecture
    if not (target / "config.json").exists():
        build_random_model(architecture).save_pretrained(target)
    return target


def model_only(model, batch_sizes: list[int], seconds: float) -> dict[str, float]:
    from cluster.model.contract import target_size

    shape = target_size(750, 1000)
    out = {}
    for batch in batch_sizes:
        images = [np.random.default_rng(i).integers(0, 255, (750, 1000, 3), np.uint8) for i in range(batch)]

        @torch.inference_mode()
        def run(images=images):
            pixels = model.preprocess(images, shape)
            model.forward(pixel_values=pixels).predicted_depth.float().cpu()

        iters, secs = _timed(run, seconds)
        out[str(batch)] = iters * batch / secs
        print(f"  model-only batch {batch}: {out[str(batch)]:.1f} images/s", file=sys.stderr)
    return out


def naive(directory: Path, content: bytes, seconds: float) -> float:
    import io

    from PIL import Image
    from transformers import AutoModelForDepthEstimation

    from cluster.model.core import _image_processor

    processor = _image_processor()
    net = AutoModelForDepthEstimation.from_pretrained(directory, dtype=torch.float32)
    net = net.to("cuda" if torch.cuda.is_available() else "cpu").eval()

    @torch.inference_mode()
    def run():
        img = Image.open(io.BytesIO(content)).convert("RGB")
        inputs = processor(images=img, return_tensors="pt").to(net.device)
        depth = net(**inputs).predicted_depth
        processor.post_process_depth_estimation(
            type("Out", (), {"predicted_depth": depth})(), target_sizes=[img.size[::-1]]
        )

    iters, secs = _timed(run, seconds)
    return iters / secs


def through_serve(settings, callers: int, seconds: float) -> dict:
    import ray
    from ray import serve

    from serve_app.depth_deployment import build_depth_app

    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start()
    handle = serve.run(build_depth_app(settings), name="depth-bench", route_prefix=None)
    image = np.random.default_rng(0).integers(0, 255, (750, 1000, 3), np.uint8)
    ref = ray.put(image)
    done = 0

    async def caller(deadline):
        nonlocal done
        while time.perf_counter() < deadline:
            await handle.remote(ref)
            done += 1

    async def run():
        nonlocal done
        await asyncio.gather(*[caller(time.perf_counter() + 3) for _ in range(callers)])  # warm up
        done = 0
        start = time.perf_counter()
        await asyncio.gather(*[caller(start + seconds) for _ in range(callers)])
        return done / (time.perf_counter() - start)

    rate = asyncio.run(run())
    info = handle.info.remote().result()
    serve.shutdown()
    ray.shutdown()
    return {"images_per_s": rate, "callers": callers, "mean_batch_size": info["mean_batch_size"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", choices=["tiny", "small", "base", "large"])
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--callers", type=int, default=128)
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from cluster.model.core import DepthEstimator
    from cluster.config.settings import Settings
    from devkit.media_files import jpeg_bytes, large_photo

    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        directory = model_dir(args.model, Path(tmp))
        core = DepthEstimator(str(directory), dtype=args.dtype, compile=args.compile,
                          max_batch_size=max(batches))
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        results: dict = {
            "model": args.model, "device": device, "dtype": core.info.dtype,
            "compiled": args.compile, "input": "1000x750 (4:3) → 518x686",
            "parameters": core.info.parameters,
        }
        print(f"{args.model} ({core.info.parameters / 1e6:.1f} M params) on {device}, {core.info.dtype}",
              file=sys.stderr)
        results["model_only_images_per_s"] = model_only(core, batches, args.seconds)
        content = jpeg_bytes(large_photo(4000, 3000))
        results["naive_images_per_s"] = naive(directory, content, args.seconds)
        print(f"  naive: {results['naive_images_per_s']:.2f} images/s", file=sys.stderr)
        del core
        if not args.skip_serve:
            settings = Settings(
                home=Path(tmp), model=str(directory), dtype=args.dtype, torch_compile=args.compile,
                serve_max_batch_size=max(batches), model_batch_size=max(batches),
                serve_batch_wait_s=0.005, serve_num_cpus=1,
            )
            results["serve"] = through_serve(settings, args.callers, args.seconds)
            best = max(results["model_only_images_per_s"].values())
            results["serve"]["fraction_of_model_only"] = results["serve"]["images_per_s"] / best
            print(f"  serve: {results['serve']}", file=sys.stderr)

    print(f"\n{'batch':>6} {'model-only img/s':>17}")
    for b, rate in results["model_only_images_per_s"].items():
        print(f"{b:>6} {rate:>17.1f}")
    print(f"naive one-at-a-time: {results['naive_images_per_s']:.2f} img/s")
    if "serve" in results:
        s = results["serve"]
        print(f"through Serve ({s['callers']} callers): {s['images_per_s']:.1f} img/s, "
              f"mean batch {s['mean_batch_size']:.1f}, {s['fraction_of_model_only']:.0%} of model-only")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
