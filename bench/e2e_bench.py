"""The whole system against the machine: what the orchestration costs per photo.

    python -m bench.e2e_bench --json docs/results/e2e.json [--photos 48] [--size 1024x768]
                              [--model tiny]
    python -m bench.e2e_bench --json docs/results/e2e_12mp.json --size 4000x3000 --photos 24

Both paths get the same N distinct JPEGs (each its own content, so ingest's deduplication keeps
them all), in the same run:

system: what `depthmill up` runs, started here: a fresh database on the Postgres at
    DEPTHMILL_TEST_ADMIN_URL / 127.0.0.1:5432 (or an embedded one), local storage in a temp
    directory, a local Ray cluster, the gateway and the depth deployment on Serve, the scheduler
    and the webhook deliverer, default settings. A few warm-up photos go through first (Ray's
    workers started, the replica's first batches run). Then the scheduler is paused, the photos
    are uploaded over HTTP, and the clock runs from its resume to the last completion.
direct: one process per core, each with the same model core loaded, doing the same work per
    photo in a plain loop (``process_item`` with the model called in-process: decode, depth,
    16-bit PNG + colour preview, thumbnail + preview, written to local storage), pulling photos
    from one queue; timed from the start signal (models loaded, one photo each done) to the last.

Reported: photos/s of each and their ratio; milliseconds per photo in each stage (fetch, decode,
depth (the system: waiting for the deployment's answer), encode, store, and record, the
scheduler's database work), summed from the items' own timings; CPU seconds per photo by process
(psutil), and the share of the cores left idle.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
from PIL import Image, ImageOps

from bench.report import write_json

# "depth" is the wait for the answer beyond the work overlapped with it; "depth_call" the whole
# call (in the direct loop: the model in-process), which overlaps the encode.
STAGE_ORDER = ("fetch", "decode", "depth", "encode", "store", "record", "depth_call")


# ------------------------------------------------------------------------------------- photos


def make_photos(count: int, size: tuple[int, int], seed: int = 0) -> list[bytes]:
    """``count`` distinct JPEGs of ``size`` (width, height): the sample photos turned and cropped
    differently each time, with a little sensor-like noise so that a 12 MP one weighs what a
    camera's does (a few MB) rather than a smooth upscale's."""
    from devkit.media_files import photo

    rng = np.random.default_rng(seed)
    base = [photo(n) for n in ("astronaut", "chelsea", "coffee")]
    out = []
    for i in range(count):
        img = ImageOps.fit(base[i % 3].rotate(7 * i % 360, expand=True), size)
        pixels = np.asarray(img, dtype=np.int16)
        pixels = pixels + rng.integers(-4, 5, pixels.shape, dtype=np.int16)
        buf = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


# ------------------------------------------------------------------------------- CPU by process


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def _name(p: psutil.Process) -> str:
    cmd = p.cmdline()
    head = cmd[0] if cmd else p.name()
    if head.startswith("ray::"):
        return head.split(" ")[0][:60]
    if p.name().startswith("postgres"):
        return "postgres (this database's backends)"
    return p.name()[:60]


def system_processes(dbname: str) -> dict[int, psutil.Process]:
    """Every process of the system this bench started: its descendants (GCS, raylet, the Ray
    workers, agents) and the Postgres backends serving its database. The Postgres server's own
    processes are shared with whatever else uses it and are left out."""
    found = {p.pid: p for p in psutil.Process().children(recursive=True)}
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if (p.info["name"] or "").startswith("postgres") and f" {dbname} " in f" {cmd} ":
            found[p.pid] = p
    return found


def cpu_sample(dbname: str) -> dict[int, tuple[str, float]]:
    out = {}
    for pid, p in system_processes(dbname).items():
        try:
            out[pid] = (_name(p), _cpu(p))
        except psutil.Error:
            continue
    return out


class Names:
    """What each process was seen doing: a Ray worker between tasks calls itself ray::IDLE, so
    the name a processing worker had mid-run is the one that says what its CPU went to."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.seen: dict[int, str] = {}
        self.every_s, self.last = every_s, 0.0

    def sample(self, dbname: str) -> None:
        if time.monotonic() - self.last < self.every_s:
            return  # the bench's own CPU comes out of the system's
        self.last = time.monotonic()
        for pid, p in system_processes(dbname).items():
            try:
                name = _name(p)
            except psutil.Error:
                continue
            if name != "ray::IDLE" or pid not in self.seen:
                self.seen[pid] = name


def cpu_by_process(before: dict, after: dict, names: Names | None = None) -> dict[str, float]:
    """CPU seconds between the samples, summed by process name (a process started in between
    counts from its start)."""
    by_name: dict[str, float] = {}
    for pid, (name, cpu) in after.items():
        name = names.seen.get(pid, name) if names else name
        used = cpu - before.get(pid, (name, 0.0))[1]
        by_name[name] = by_name.get(name, 0.0) + max(used, 0.0)
    return dict(sorted(by_name.items(), key=lambda kv: -kv[1]))


# ------------------------------------------------------------------------------- the system


def _upload(client, photos: list[bytes], tag: str, per_request: int = 10) -> list[str]:
    ids = []
    for start in range(0, len(photos), per_request):
        files = [("files", (f"{tag}-{start + i}.jpg", body, "image/jpeg"))
                 for i, body in enumerate(photos[start:start + per_request])]
        r = client.post("/api/media/upload", files=files)
        r.raise_for_status()
        for result in r.json()["results"]:
            if result.get("status") != "created":
                raise RuntimeError(f"upload not queued as a new photo: {result}")
            ids.append(result["media_id"])
    return ids


def _wait_completed(url: str, count: int, timeout_s: float = 3600, every=None) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            if every is not None:
                every()
            done = conn.execute("SELECT count(*) FROM processing_queue_completed").fetchone()[0]
            if done >= count:
                return
            failed = conn.execute(
                "SELECT count(*), max(last_error) FROM processing_queue WHERE status = 'failed'"
            ).fetchone()
            if failed[0]:
                raise RuntimeError(f"{failed[0]} items failed: {failed[1]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{done} of {count} items completed in {timeout_s} s")
            time.sleep(0.1)


def _stage_delta(before: dict, after: dict) -> tuple[int, dict[str, float]]:
    photos = after["photos"] - before["photos"]
    seconds = {k: v - before["seconds"].get(k, 0.0) for k, v in after["seconds"].items()}
    return photos, seconds


def _start_ray(tries: int = 3) -> None:
    import ray

    for attempt in range(tries):
        try:
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
            return
        except Exception as e:  # noqa: BLE001 - a busy machine's GCS can miss the start deadline
            ray.shutdown()
            if attempt == tries - 1:
                raise
            print(f"  Ray did not start ({e}); again", file=sys.stderr)


def run_system(args, photos: list[bytes], warmup: list[bytes], home: Path) -> dict:
    import httpx
    import ray
    from ray import serve

    from bench.queue_bench import admin_url, fresh_database
    from cluster.config.settings import Settings
    from cluster.config.names import APP_NAME
    from cluster.events.delivery import get_or_start_deliverer
    from cluster.runtime import free_port, start_serve, use_node_env
    from cluster.work.scheduler import get_or_start_scheduler
    from db.migrate import migrate
    from serve_app.app import build_depthmill_app

    dbname = "depthmill_e2e_bench"
    with ExitStack() as stack:
        admin, server = admin_url()
        if server is not None:
            stack.callback(server.stop)
        url = fresh_database(admin, dbname)
        migrate(url)
        port = free_port()
        settings = Settings(home=home, database_url=url, model=args.model, host="127.0.0.1",
                            port=port, upload_rate_per_minute=1_000_000,
                            max_file_size=256 * 2**20)
        use_node_env()
        _start_ray()
        stack.callback(ray.shutdown)
        start_serve(settings)
        stack.callback(serve.shutdown)
        serve.run(build_depthmill_app(settings), name=APP_NAME, route_prefix="/")
        scheduler = get_or_start_scheduler(settings)
        get_or_start_deliverer(settings)
        client = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300))

        _upload(client, warmup, "warmup")
        _wait_completed(url, len(warmup))
        ray.get(scheduler.pause.remote())
        _upload(client, photos, "photo")
        time.sleep(1)  # let the uploads' own work (gateway, Postgres) settle before the clock
        before_stages = ray.get(scheduler.status.remote())["stages"]
        before_cpu = cpu_sample(dbname)
        started = time.perf_counter()
        ray.get(scheduler.resume.remote())
        names = Names()
        _wait_completed(url, len(warmup) + len(photos), every=lambda: names.sample(dbname))
        elapsed = time.perf_counter() - started
        after_cpu = cpu_sample(dbname)
        status = ray.get(scheduler.status.remote())
        counted, stage_seconds = _stage_delta(before_stages, status["stages"])
        cpus = ray.cluster_resources().get("CPU", os.cpu_count())
    return _summary(len(photos), elapsed, counted, stage_seconds,
                    cpu_by_process(before_cpu, after_cpu, names), cpus)


# ------------------------------------------------------------------------------- direct loop


def _direct_worker(settings, items: mp.Queue, warmup, ready: mp.Queue, go, out: mp.Queue) -> None:
    import torch

    torch.set_num_threads(1)
    from cluster.media import configure_pillow
    from cluster.model.options import ModelOptions
    from cluster.storage import storage_from_settings
    from cluster.work.processing import process_item

    configure_pillow()
    storage = storage_from_settings(settings)
    core = ModelOptions.from_settings(settings).load()
    process_item(warmup, settings, storage, core.predict)
    ready.put(os.getpid())
    go.wait()
    cpu0, done, stages = os.times(), 0, {}
    while (item := items.get()) is not None:
        outcome = process_item(item, settings, storage, core.predict)
        if outcome.status != "completed":
            raise RuntimeError(f"direct loop: {outcome.status}: {outcome.error}")
        done += 1
        for stage, seconds in outcome.stages.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    cpu1 = os.times()
    out.put((done, stages, (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)))


def _item(storage, content: bytes, model: str):
    from db.queue import ClaimedItem

    media_id = uuid.uuid4()
    key = f"originals/{media_id}.jpg"
    storage.put_bytes(key, content, "image/jpeg")
    now = datetime.now(UTC)
    return ClaimedItem(uuid.uuid4(), media_id, model, "photo", len(content), "image/jpeg", key,
                       1, 1, 3, "direct", now, now)


def run_direct(args, photos: list[bytes], warmup: list[bytes], home: Path, processes: int) -> dict:
    from cluster.config.settings import Settings
    from cluster.storage import storage_from_settings

    settings = Settings(home=home, model=args.model)
    storage = storage_from_settings(settings)
    items = [_item(storage, p, args.model) for p in photos]
    warm = [_item(storage, warmup[i % len(warmup)], args.model) for i in range(processes)]
    ctx = mp.get_context("spawn")
    queue, ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event()
    for item in items:
        queue.put(item)
    for _ in range(processes):
        queue.put(None)
    procs = [ctx.Process(target=_direct_worker, args=(settings, queue, warm[i], ready, go, out))
             for i in range(processes)]
    for p in procs:
        p.start()
    names = {ready.get(timeout=600): "direct loop worker" for _ in procs}
    started = time.perf_counter()
    go.set()
    results = [out.get(timeout=3600) for _ in procs]
    elapsed = time.perf_counter() - started
    for p in procs:
        p.join()
    done = sum(r[0] for r in results)
    stages: dict[str, float] = {}
    for _, s, _ in results:
        for stage, seconds in s.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    cpu = {f"{name} ({len(names)})": sum(r[2] for r in results) for name in set(names.values())}
    return _summary(done, elapsed, done, stages, cpu, processes)


# ------------------------------------------------------------------------------------ report


def _summary(photos: int, elapsed: float, counted: int, stage_seconds: dict[str, float],
             cpu: dict[str, float], cpus: float) -> dict:
    total_cpu = sum(cpu.values())
    return {
        "photos": photos,
        "seconds": round(elapsed, 2),
        "photos_per_s": round(photos / elapsed, 3),
        "stage_ms_per_photo": {s: round(1000 * stage_seconds[s] / counted, 1)
                               for s in STAGE_ORDER if s in stage_seconds and counted},
        "cpu_s_per_photo": round(total_cpu / photos, 4),
        "cpu_s_per_photo_by_process": {k: round(v / photos, 4) for k, v in cpu.items()},
        "cpus": cpus,
        "idle_share": round(max(0.0, 1 - total_cpu / (cpus * elapsed)), 3),
    }


def _mean_direct(runs: list[dict]) -> dict:
    """The direct runs as one: rates, stages and CPU averaged."""
    def mean(values):
        return round(sum(values) / len(values), 4)

    first = runs[0]
    return {
        **first,
        "seconds": mean([r["seconds"] for r in runs]),
        "photos_per_s": mean([r["photos_per_s"] for r in runs]),
        "stage_ms_per_photo": {s: mean([r["stage_ms_per_photo"].get(s, 0) for r in runs])
                               for s in first["stage_ms_per_photo"]},
        "cpu_s_per_photo": mean([r["cpu_s_per_photo"] for r in runs]),
        "cpu_s_per_photo_by_process": {k: mean([r["cpu_s_per_photo_by_process"][k] for r in runs])
                                       for k in first["cpu_s_per_photo_by_process"]},
        "idle_share": mean([r["idle_share"] for r in runs]),
    }


def print_table(results: dict) -> None:
    stages = [s for s in STAGE_ORDER if any(s in results[p]["stage_ms_per_photo"]
                                            for p in ("system", "direct"))]
    print(f"\n{results['photos']} photos {results['size']}, model {results['model']}, "
          f"{results['cpus']} CPUs\n")
    print(f"{'path':>8} {'photos/s':>9} {'CPU s/photo':>12} {'idle':>6}  "
          + " ".join(f"{s:>7}" for s in stages) + "   (ms per photo)")
    for path in ("system", "direct"):
        r = results[path]
        print(f"{path:>8} {r['photos_per_s']:>9.2f} {r['cpu_s_per_photo']:>12.3f} "
              f"{r['idle_share']:>6.0%}  "
              + " ".join(f"{r['stage_ms_per_photo'].get(s, 0):>7.1f}" for s in stages))
    print(f"\nsystem / direct: {results['ratio']:.2f} (target ≥ 0.9)\n")
    print("CPU seconds per photo by process (system):")
    for name, seconds in results["system"]["cpu_s_per_photo_by_process"].items():
        if seconds >= 0.0005:
            print(f"  {name:>48} {seconds:8.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--size", default="1024x768", choices=["1024x768", "4000x3000"])
    parser.add_argument("--model", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--warmup", type=int, default=6, help="photos through the system first")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="direct loop processes (default: one per core)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))
    print(f"making {args.photos + args.warmup} photos of {args.size}…", file=sys.stderr)
    all_photos = make_photos(args.photos + args.warmup, size)
    warmup, photos = all_photos[:args.warmup], all_photos[args.warmup:]
    results: dict = {"photos": args.photos, "size": args.size, "model": args.model,
                     "cpus": os.cpu_count(), "photo_bytes_mean": int(np.mean([len(p) for p in photos]))}
    # The direct loop runs before and after the system and the ratio is taken to their mean: on a
    # machine shared with other work the speed drifts, and one direct run on one side of the
    # system would put all of the drift into the ratio.
    with tempfile.TemporaryDirectory(prefix="depthmill-e2e-") as tmp:
        runs = []
        for label in ("direct (before)", "system", "direct (after)"):
            print(f"{label}…", file=sys.stderr)
            if label == "system":
                results["system"] = run_system(args, photos, warmup, Path(tmp) / "system")
                rate = results["system"]["photos_per_s"]
            else:
                runs.append(run_direct(args, photos, warmup, Path(tmp) / f"direct{len(runs)}",
                                       args.processes))
                rate = runs[-1]["photos_per_s"]
            print(f"  {rate:.2f} photos/s", file=sys.stderr)
    results["direct"] = _mean_direct(runs)
    results["direct_runs_photos_per_s"] = [r["photos_per_s"] for r in runs]
    results["ratio"] = round(results["system"]["photos_per_s"] / results["direct"]["photos_per_s"], 3)
    print_table(results)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
