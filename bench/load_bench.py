"""HTTP load on the whole system over loopback: concurrent uploaders and readers for a fixed time.

    python -m bench.load_bench --json bench/results/load.json [--uploaders 20] [--readers 5]
                               [--seconds 60] [--photo-mb 2] [--soak 600 --keep 50]
                               [--url URL --api-key K]

Without --url it starts everything itself, as `depthmill up` would: a fresh database on the
Postgres at DEPTHMILL_TEST_ADMIN_URL / 127.0.0.1:5432 (or an embedded one), local storage in a
temp directory, a local Ray cluster, the gateway + tiny depth deployment on Serve, and the
scheduler, which processes the uploads while the load runs.

Each upload is a distinct photo of about --photo-mb MB (a unique JPEG comment segment, so no two
are deduplicated). Readers cycle through list, detail, queue status and health. Each simulated
client has its own connection. Any non-2xx answer or transport error counts as an error; the
first --warmup seconds are not recorded. Once the system is up, the generator raises its own
priority (see ``favour_generator``) and reports how late its event loop ran, so a tail it
reports is the system's, not the generator's.
--soak runs that long and samples the memory (PSS) of every process of the system (Ray workers
and actors, raylet, GCS, Postgres) once a minute, after --prime photos have been processed with no
other load and the warm-up has run, reporting growth over the whole soak and over
its second half. This process, the load generator, is left out. --keep N makes each uploader
delete its oldest upload beyond N (timed as "delete"), so that storage stays bounded over a soak.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict, deque
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

from bench.report import write_json

WARMUP_S = 20


def base_photo(megabytes: float) -> bytes:
    """A JPEG of about the requested size: a gradient with noise, which compresses like a busy
    photo. Bytes grow with pixels, so rescale the side until the size is within 5%."""
    target = megabytes * 1_000_000
    side = int((target / 0.75) ** 0.5)
    for _ in range(6):
        out = _noisy_jpeg(side)
        if abs(len(out) - target) < 0.05 * target:
            break
        side = int(side * (target / len(out)) ** 0.5)
    return out


def _noisy_jpeg(side: int) -> bytes:
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 255, side, dtype=np.float32)
    img = (smooth[None, :, None] + rng.normal(0, 40, (side, side, 3))).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(img).save(out, "JPEG", quality=85)
    return out.getvalue()


def unique(photo: bytes, n: int) -> bytes:
    """The same picture with a JPEG comment (COM segment) after SOI: new bytes, new sha256."""
    comment = f"depthmill load bench {n} {random.random()}".encode()
    return photo[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + photo[2:]


class Recorder:
    """Latencies and errors of requests started after ``warmup`` seconds; earlier ones (cold
    replicas, Ray spawning its first workers) are sent but not counted."""

    def __init__(self, warmup: float = 0) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.timeline: list[tuple[str, float, float]] = []  # (op, started, latency)
        self.t0 = time.perf_counter() + warmup
        self.completed = 0
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.loop_lags: list[float] = []

    async def timed(self, op: str, request) -> httpx.Response | None:
        """Await one request (a coroutine, not yet started) and record how it went."""
        started = time.perf_counter()
        counted = started >= self.t0
        try:
            response = await request
        except httpx.HTTPError as e:
            if counted:
                self.errors[op].append(f"{type(e).__name__}: {e}")
            return None
        if not counted:
            return response
        self.latencies[op].append(time.perf_counter() - started)
        self.timeline.append((op, started - self.t0, self.latencies[op][-1]))
        if response.status_code >= 300:
            self.errors[op].append(f"{response.status_code}: {response.text[:200]}")
        return response

    async def watch_loop(self, stop_at: float, tick_s: float = 0.01) -> None:
        """Sample how late this event loop wakes up. Requests are timed on it, so a late loop adds
        to every latency: this says how much of a tail is the generator's own."""
        while time.monotonic() < stop_at:
            before = time.perf_counter()
            await asyncio.sleep(tick_s)
            if before >= self.t0:
                self.loop_lags.append(time.perf_counter() - before - tick_s)

    def loop_lag(self) -> dict:
        lags = sorted(self.loop_lags) or [0.0]
        return {"p50_ms": round(1000 * statistics.median(lags), 1),
                "p99_ms": round(1000 * _p99(lags), 1), "max_ms": round(1000 * lags[-1], 1)}

    async def count_completed(self, url: str, headers: dict[str, str], warmup: float,
                              seconds: float) -> None:
        """Items the depth work completed in the recorded window: uploads may not starve it."""
        async with own_connection(url, headers) as client:
            async def completed() -> int:
                r = await client.get("/api/queue/status")
                return r.json()["completed"] if r.status_code == 200 else 0

            await asyncio.sleep(warmup)
            start = await completed()
            await asyncio.sleep(seconds)
            self.completed = await completed() - start

    def p99_by_window(self, op: str, window_s: float) -> list[float]:
        """p99 latency (ms) of ``op`` per window: drift over a soak shows here."""
        windows: dict[int, list[float]] = defaultdict(list)
        for name, started, latency in self.timeline:
            if name == op:
                windows[int(started // window_s)].append(latency)
        return [round(1000 * _p99(sorted(windows[w])), 1) for w in sorted(windows)]

    def table(self, seconds: float) -> dict:
        rows = {}
        for op in sorted(set(self.latencies) | set(self.errors)):
            lat = sorted(self.latencies[op])
            rows[op] = {
                "requests": len(lat) + sum(1 for e in self.errors[op] if not e[:3].isdigit()),
                "requests_per_s": len(lat) / seconds,
                "p50_ms": 1000 * statistics.median(lat) if lat else None,
                "p99_ms": 1000 * _p99(lat) if lat else None,
                "errors": len(self.errors[op]),
                "first_errors": self.errors[op][:3],
            }
        return rows


def _p99(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def own_connection(url: str, headers: dict[str, str]) -> httpx.AsyncClient:
    """One keep-alive connection per simulated client, as separate users have. Sharing one pool
    among all of them measured httpx's own wait for a free connection (p99 1.7 s at 20
    uploaders) as server latency."""
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=60,
                             limits=httpx.Limits(max_connections=1))


async def uploader(url: str, headers: dict[str, str], rec: Recorder, photo: bytes, stop_at: float,
                   ids: list, counter, windows: list[deque], keep: int | None = None) -> None:
    """Uploads back to back. With ``keep``, deletes its oldest upload once it has more, so a long
    run's storage stays bounded (at 60 uploads/s, distinct 2 MB photos fill 70 GB in 10 minutes)."""
    mine: deque[str] = deque()
    windows.append(mine)
    async with own_connection(url, headers) as client:
        while time.monotonic() < stop_at:
            n = next(counter)
            body = unique(photo, n)
            r = await rec.timed("upload", client.post(
                "/api/media/upload", files=[("files", (f"load-{n}.jpg", body, "image/jpeg"))]))
            if r is not None and r.status_code == 200:
                new = [x["media_id"] for x in r.json()["results"] if x.get("media_id")]
                ids.extend(new)
                mine.extend(new)
            while keep is not None and len(mine) > keep:
                await rec.timed("delete", client.delete(f"/api/media/{mine.popleft()}"))


async def reader(url: str, headers: dict[str, str], rec: Recorder, stop_at: float, ids: list,
                 windows: list[deque], keep: int | None) -> None:
    async with own_connection(url, headers) as client:
        while time.monotonic() < stop_at:
            await rec.timed("list", client.get("/api/media", params={"limit": 50}))
            # With --keep, only each uploader's newest upload is sure to be there still.
            choices = [w[-1] for w in windows if w] if keep else ids
            if choices:
                media_id = random.choice(choices)
                await rec.timed("detail", client.get(f"/api/media/{media_id}"))
            await rec.timed("queue_status", client.get("/api/queue/status"))
            await rec.timed("health", client.get("/api/health"))


GENERATOR_NICE = -10


def favour_generator() -> int:
    """Run the generator's event loop ahead of the system it loads; return its niceness.

    On one machine the generator shares the cores with the system under test. At equal priority
    its loop waits behind the system's busy threads, and that wait would be counted as the
    system's latency; real clients run elsewhere. Raised, it still takes its CPU from the same
    cores. Call this after the local system is started: only this thread is changed (Linux
    niceness is per thread), and processes started earlier keep theirs. Needs root or
    CAP_SYS_NICE; without, the generator runs at its current niceness and reports it.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, 0, GENERATOR_NICE)
    except OSError:
        pass
    return os.getpriority(os.PRIO_PROCESS, 0)


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def drive(url: str, api_key: str | None, args, photo: bytes, seconds: float,
                warmup: float = 0, memory: MemoryWatch | None = None) -> Recorder:
    """Load for ``warmup`` + ``seconds``; only the last ``seconds`` are recorded."""
    rec, ids, counter = Recorder(warmup), [], itertools.count()
    windows: list[deque] = []  # each uploader's uploads still stored (with --keep)
    watcher = asyncio.create_task(memory.run()) if memory else None
    headers = auth_headers(api_key)
    stop_at = time.monotonic() + warmup + seconds
    await asyncio.gather(
        rec.watch_loop(stop_at), rec.count_completed(url, headers, warmup, seconds),
        *(uploader(url, headers, rec, photo, stop_at, ids, counter, windows, args.keep)
          for _ in range(args.uploaders)),
        *(reader(url, headers, rec, stop_at, ids, windows, args.keep) for _ in range(args.readers)),
    )
    if watcher:
        memory.stop()
        await watcher
    return rec


def prime(url: str, headers: dict[str, str], photo: bytes, count: int, timeout_s: float = 600) -> float:
    """Upload ``count`` photos with no other load and wait until the depth work has completed
    them: every processing worker and the depth replica have then run real items (imports,
    allocator pools, the model's first batches), so a soak's memory baseline is a warm system's.
    Returns the seconds it took."""
    started = time.monotonic()
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        done_before = client.get("/api/queue/status").json()["completed"]
        for n in range(count):
            body = unique(photo, -1 - n)
            client.post("/api/media/upload",
                        files=[("files", (f"prime-{n}.jpg", body, "image/jpeg"))]).raise_for_status()
        while client.get("/api/queue/status").json()["completed"] - done_before < count:
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"the depth work did not complete {count} priming photos")
            time.sleep(1)
    return time.monotonic() - started


def system_processes() -> dict[int, str]:
    """pid → a readable name, for every process of a local system (Ray's and Postgres's).
    This process (the load generator, and the driver that started the system) is not one."""
    found = {}
    for p in psutil.process_iter(["cmdline", "name"]):
        cmd = p.info["cmdline"] or []
        head = cmd[0] if cmd else (p.info["name"] or "")
        if p.pid == os.getpid():
            continue
        if head.startswith("ray::") or "raylet" in head or "gcs_server" in head or (
            p.info["name"] or "").startswith("postgres"):
            found[p.pid] = head.split(" ")[0][:80] if head.startswith("ray::") else (
                p.info["name"] or head)[:80]
    return found


def memory_sample() -> dict[int, tuple[str, float]]:
    """pid → (name, PSS in MB). PSS splits shared pages among their users, so Postgres backends
    touching more of the shared buffers, or workers mapping the same libraries, are not growth."""
    out = {}
    for pid, name in system_processes().items():
        try:
            out[pid] = (name, psutil.Process(pid).memory_full_info().pss / 2**20)
        except psutil.Error:
            continue
    return out


class MemoryWatch:
    """Samples every process's PSS once a window while the soak runs."""

    def __init__(self, every_s: float) -> None:
        self.every_s, self.samples = every_s, []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while True:
            self.samples.append(await asyncio.to_thread(memory_sample))
            try:
                await asyncio.wait_for(self._stop.wait(), self.every_s)
                return
            except TimeoutError:
                continue

    def stop(self) -> None:
        self._stop.set()

    def report(self) -> dict:
        """Growth of the processes alive throughout, over the whole soak and over its second
        half: a leak keeps growing in the second half; a cache or a lazy import has levelled off."""
        first, mid, last = self.samples[0], self.samples[len(self.samples) // 2], self.samples[-1]
        steady = sorted(set(first) & set(last))

        def total(sample: dict) -> float:
            return sum(sample[pid][1] for pid in steady if pid in sample)

        rows = {f"{first[pid][0]} [{pid}]": {
            "start_mb": round(first[pid][1], 1), "mid_mb": round(mid.get(pid, first[pid])[1], 1),
            "end_mb": round(last[pid][1], 1),
            "growth_pct": round(100 * (last[pid][1] / first[pid][1] - 1), 1) if first[pid][1] else 0,
        } for pid in steady}
        started = {f"{name} [{pid}]": round(mb, 1) for pid, (name, mb) in last.items() if pid not in first}
        return {
            "samples": len(self.samples), "every_s": self.every_s, "processes": rows,
            "total_start_mb": round(total(first), 1), "total_mid_mb": round(total(mid), 1),
            "total_end_mb": round(total(last), 1),
            "total_growth_pct": round(100 * (total(last) / total(first) - 1), 1),
            "second_half_growth_pct": round(100 * (total(last) / total(mid) - 1), 1),
            "total_mb_by_sample": [round(sum(mb for _, mb in sample.values()), 1) for sample in self.samples],
            "started_during_soak_mb": started,
            "exited_during_soak": sorted(f"{first[p][0]} [{p}]" for p in set(first) - set(last)),
        }


def start_local_system(stack: ExitStack, args) -> str:
    import ray
    from ray import serve

    from bench.queue_bench import admin_url, fresh_database
    from cluster.runtime import free_port, start_serve, use_node_env
    from cluster.work.scheduler import get_or_start_scheduler
    from cluster.config.settings import Settings
    from cluster.config.names import APP_NAME
    from db.migrate import migrate
    from serve_app.app import build_depthmill_app

    admin, server = admin_url()
    if server is not None:
        stack.callback(server.stop)
    url = fresh_database(admin, "depthmill_load_bench")
    migrate(url)
    home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    port = free_port()
    settings = Settings(home=home, database_url=url, model="tiny", host="127.0.0.1", port=port,
                        upload_rate_per_minute=1_000_000, serve_num_cpus=0.25, db_pool_size=8,
                        max_file_size=64 * 2**20)
    use_node_env()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    stack.callback(ray.shutdown)
    start_serve(settings)
    stack.callback(serve.shutdown)
    serve.run(build_depthmill_app(settings), name=APP_NAME, route_prefix="/")
    get_or_start_scheduler(settings)
    return f"http://127.0.0.1:{port}"


def print_table(rows: dict) -> None:
    print(f"\n{'op':>13} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for op, r in rows.items():
        p50 = f"{r['p50_ms']:.0f}" if r["p50_ms"] is not None else "-"
        p99 = f"{r['p99_ms']:.0f}" if r["p99_ms"] is not None else "-"
        print(f"{op:>13} {r['requests']:>9} {r['requests_per_s']:>8.1f} {p50:>8} {p99:>8} {r['errors']:>7}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploaders", type=int, default=20)
    parser.add_argument("--readers", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=WARMUP_S,
                        help="seconds of load sent before recording starts")
    parser.add_argument("--photo-mb", type=float, default=2.0)
    parser.add_argument("--soak", type=float, default=0, help="soak for this many seconds instead")
    parser.add_argument("--prime", type=int, default=64,
                        help="soak only: photos processed with no other load before the soak starts")
    parser.add_argument("--keep", type=lambda v: max(1, int(v)), default=None,
                        help="each uploader deletes its oldest upload beyond this many (bounded storage)")
    parser.add_argument("--no-processing", action="store_true",
                        help="stop the scheduler first: the API alone, no depth work competing for CPU")
    parser.add_argument("--url", help="an already running gateway (default: start one here)")
    parser.add_argument("--api-key", default=os.environ.get("DEPTHMILL_API_KEY"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    photo = base_photo(args.photo_mb)
    results: dict = {"uploaders": args.uploaders, "readers": args.readers, "keep": args.keep,
                     "photo_bytes": len(photo), "cpus": os.cpu_count(), "model": "tiny",
                     "processing": not args.no_processing,
                     "prime": args.prime if args.soak else 0}
    with ExitStack() as stack:
        url = args.url or start_local_system(stack, args)
        results["generator_nice"] = favour_generator()
        if args.no_processing:
            httpx.post(f"{url}/api/queue/worker/stop", headers=auth_headers(args.api_key),
                       timeout=60).raise_for_status()
        if args.soak:
            # Memory is measured from the end of the warm-up, on a primed system: workers, pools
            # and caches that fill once are not growth.
            if args.prime:
                results["prime_s"] = round(prime(url, auth_headers(args.api_key), photo, args.prime), 1)
            asyncio.run(drive(url, args.api_key, args, photo, 0, warmup=args.warmup))
            memory = MemoryWatch(every_s=min(60, args.soak / 10))
            rec = asyncio.run(drive(url, args.api_key, args, photo, args.soak, memory=memory))
            results["memory"] = memory.report()
            seconds = args.soak
        else:
            rec = asyncio.run(drive(url, args.api_key, args, photo, args.seconds, args.warmup))
            seconds = args.seconds
        results.update(seconds=seconds, warmup_s=args.warmup, ops=rec.table(seconds),
                       upload_p99_ms_by_minute=rec.p99_by_window("upload", 60),
                       generator_loop_lag=rec.loop_lag(),
                       depth_items_completed_per_s=round(rec.completed / seconds, 2))
    print_table(results["ops"])
    print(f"\ndepth work: {results['depth_items_completed_per_s']} items completed/s")
    lag = results["generator_loop_lag"]
    print(f"\ngenerator (nice {results['generator_nice']}): event loop late by p50 {lag['p50_ms']} ms, "
          f"p99 {lag['p99_ms']} ms, max {lag['max_ms']} ms")
    if "memory" in results:
        mem = results["memory"]
        print(f"\nmemory (PSS) of the {len(mem['processes'])} processes alive throughout: "
              f"{mem['total_start_mb']:.0f} → {mem['total_mid_mb']:.0f} → {mem['total_end_mb']:.0f} MB "
              f"({mem['total_growth_pct']:+.1f}%; second half {mem['second_half_growth_pct']:+.1f}%)")
        worst = sorted(mem["processes"].items(), key=lambda kv: -kv[1]["growth_pct"])[:8]
        for name, row in worst:
            print(f"  {name:>56} {row['start_mb']:7.0f} → {row['mid_mb']:7.0f} → {row['end_mb']:7.0f} MB"
                  f" {row['growth_pct']:+6.1f}%")
        print(f"  started during the soak: {mem['started_during_soak_mb']}")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
