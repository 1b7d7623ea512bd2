"""Depth deployment scale-out on this machine: throughput with 1, 2 and 3 replicas, and how long
the autoscaler takes to go from 1 replica to each count under load.

    python -m bench.scale_bench --model small --json docs/results/scale.json

Throughput: a fixed replica count (min = max = n), ``--callers`` closed-loop callers sending
1000×750 photos through a Serve handle for ``--seconds``. Time-to-scale: min 1, max n, the
autoscaling settings depthmill passes (``SERVE_TARGET_ONGOING_REQUESTS``,
``SERVE_UPSCALE_DELAY_S``: ``--target``, ``--upscale-delay``) and Serve's own metrics window
(pushed every 10 s, averaged over 30 s); measured from the first request to the moment Serve
reports the n-th replica starting (the decision) and running (ready to serve).

Every replica here shares the same CPU cores: on a 2-core machine a second replica adds
processes, not compute.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import write_json

APP = "depth-scale-bench"


def _replicas() -> tuple[int, int]:
    """(all replicas, running replicas) of the bench's depth deployment, from serve.status()."""
    from ray import serve
    from ray.serve.schema import ReplicaState

    from cluster.config.names import DEPTH_DEPLOYMENT

    app = serve.status().applications.get(APP)
    if app is None or DEPTH_DEPLOYMENT not in app.deployments:
        return 0, 0
    states = app.deployments[DEPTH_DEPLOYMENT].replica_states
    return sum(states.values()), states.get(ReplicaState.RUNNING, 0)


def _deploy(settings, replicas: int):
    """Deploy (or update in place: the replicas that run stay) and wait until exactly
    ``replicas`` run."""
    from ray import serve

    from serve_app.depth_deployment import build_depth_app

    handle = serve.run(build_depth_app(settings), name=APP, route_prefix=None)
    while _replicas() != (replicas, replicas):
        time.sleep(0.25)
    return handle


async def _callers(handle, ref, callers: int, until) -> int:
    """Closed-loop callers until ``until()`` (checked four times a second, off the event loop:
    serve.status() blocks); returns the requests completed."""
    done = 0
    stop = asyncio.Event()

    async def watch():
        while not await asyncio.to_thread(until):
            await asyncio.sleep(0.25)
        stop.set()

    async def caller():
        nonlocal done
        while not stop.is_set():
            result = await handle.remote(ref)
            assert result.ok, result.error
            done += 1

    await asyncio.gather(watch(), *[caller() for _ in range(callers)])
    return done


def throughput(settings, replicas: int, callers: int, seconds: float, ref) -> dict:
    handle = _deploy(settings.model_copy(update={
        "serve_min_replicas": replicas, "serve_max_replicas": replicas}), replicas)

    async def warm_then_measure() -> tuple[int, float]:
        # One event loop for both: a handle stays with the loop it was first used on.
        warm = time.perf_counter() + 3
        await _callers(handle, ref, callers, lambda: time.perf_counter() > warm)
        start = time.perf_counter()
        done = await _callers(handle, ref, callers, lambda: time.perf_counter() > start + seconds)
        # Requests still running at the deadline finish and count: the time they took counts too.
        return done, time.perf_counter() - start

    done, elapsed = asyncio.run(warm_then_measure())
    return {"replicas": replicas, "images_per_s": done / elapsed, "images": done,
            "seconds": elapsed}


def time_to_scale(settings, replicas: int, callers: int, ref, timeout_s: float) -> dict:
    one = settings.model_copy(update={"serve_min_replicas": 1, "serve_max_replicas": 1})
    _deploy(one, 1)  # from one running replica
    handle = _deploy(one.model_copy(update={"serve_max_replicas": replicas}), 1)
    start = time.perf_counter()
    seen: dict[str, float | None] = {"decided_s": None, "running_s": None}

    def reached() -> bool:
        total, running = _replicas()
        now = time.perf_counter() - start
        if seen["decided_s"] is None and total >= replicas:
            seen["decided_s"] = now
        if running >= replicas:
            seen["running_s"] = now
            return True
        return now > timeout_s

    if replicas > 1:
        asyncio.run(_callers(handle, ref, callers, reached))
    else:
        seen = {"decided_s": 0.0, "running_s": 0.0}
    return {"replicas": replicas, **seen}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", choices=["tiny", "small", "base", "large"])
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--num-cpus", type=float, default=0.5, help="CPUs reserved per replica")
    parser.add_argument("--target", type=float, default=4, help="SERVE_TARGET_ONGOING_REQUESTS")
    parser.add_argument("--upscale-delay", type=float, default=10, help="SERVE_UPSCALE_DELAY_S")
    parser.add_argument("--scale-timeout", type=float, default=180)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    from bench.depth_bench import model_dir
    from cluster.config.settings import Settings
    from cluster.runtime import use_node_env

    use_node_env()  # token authentication off, as `depthmill up` starts a node

    counts = [int(n) for n in args.replicas.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model = "tiny" if args.model == "tiny" else str(model_dir(args.model, Path(tmp)))
        settings = Settings(
            home=Path(tmp), model=model, serve_num_cpus=args.num_cpus, serve_max_batch_size=8,
            model_batch_size=8, serve_batch_wait_s=0.01,
            serve_target_ongoing_requests=args.target, serve_upscale_delay_s=args.upscale_delay,
        )
        ray.init(include_dashboard=False, log_to_driver=False,
                 num_cpus=max(4, int(max(counts) * args.num_cpus) + 2))
        serve.start()
        image = np.random.default_rng(0).integers(0, 255, (750, 1000, 3), np.uint8)
        ref = ray.put(image)
        results: dict = {
            "model": args.model, "cores": os.cpu_count(), "load_average_at_start": os.getloadavg(), "callers": args.callers,
            "input": "1000x750 (4:3)", "num_cpus_per_replica": args.num_cpus,
            "target_ongoing_requests": args.target, "upscale_delay_s": args.upscale_delay,
            "throughput": [], "time_to_scale": [],
        }
        for n in counts:
            row = throughput(settings, n, args.callers, args.seconds, ref)
            print(f"  {n} replica(s): {row['images_per_s']:.1f} images/s", file=sys.stderr)
            results["throughput"].append(row)
        for n in counts:
            row = time_to_scale(settings, n, args.callers, ref, args.scale_timeout)
            print(f"  1 → {n} replica(s): {row}", file=sys.stderr)
            results["time_to_scale"].append(row)
        serve.delete(APP)
        serve.shutdown()
        ray.shutdown()

    def fmt(v):
        return "—" if v is None else f"{v:.1f}"

    print(f"\n{args.model} on {os.cpu_count()} cores, {args.callers} callers")
    print(f"{'replicas':>8} {'images/s':>9} {'decided s':>10} {'running s':>10}")
    for t, s in zip(results["throughput"], results["time_to_scale"]):
        print(f"{t['replicas']:>8} {t['images_per_s']:>9.1f} {fmt(s['decided_s']):>10} "
              f"{fmt(s['running_s']):>10}")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
