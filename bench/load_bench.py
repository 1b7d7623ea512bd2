"""HTTP load on the whole system over loopback: concurrent uploaders and readers for a fixed time.

    python -m bench.load_bench --json bench/results/load.json [--uploaders 20] [--readers 5]
                               [--seconds 60] [--photo-mb 2] [--soak 600] [--url URL --api-key K]

Without --url it starts everything itself, as `depthmill up` would: a fresh database on the
Postgres at DEPTHMILL_TEST_ADMIN_URL / 127.0.0.1:5432 (or an embedded one), local storage in a
temp directory, a local Ray cluster, the gateway + tiny depth deployment on Serve, and the
scheduler, which processes the uploads while the load runs.

Each upload is a distinct photo of about --photo-mb MB (a unique JPEG comment segment, so no two
are deduplicated). Readers cycle through list, detail, queue status and health. Any non-2xx
answer or transport error counts as an error. --soak runs that long and reports the resident
memory of every process of the system (Ray workers and actors, raylet, GCS, Postgres, this
driver) after a warm-up and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

from bench.report import write_json

WARMUP_S = 60


def base_photo(megabytes: float) -> bytes:
    """A JPEG of roughly the requested size (noise compresses badly, so size tracks pixels)."""
    rng = np.random.default_rng(0)
    side = int((megabytes * 1_000_000 / 0.75) ** 0.5)
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
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)

    async def timed(self, op: str, request) -> httpx.Response | None:
        """Await one request (a coroutine, not yet started) and record how it went."""
        started = time.perf_counter()
        try:
            response = await request
        except httpx.HTTPError as e:
            self.errors[op].append(f"{type(e).__name__}: {e}")
            return None
        self.latencies[op].append(time.perf_counter() - started)
        if response.status_code >= 300:
            self.errors[op].append(f"{response.status_code}: {response.text[:200]}")
        return response

    def table(self, seconds: float) -> dict:
        rows = {}
        for op in sorted(set(self.latencies) | set(self.errors)):
            lat = sorted(self.latencies[op])
            rows[op] = {
                "requests": len(lat) + sum(1 for e in self.errors[op] if not e[:3].isdigit()),
                "requests_per_s": len(lat) / seconds,
                "p50_ms": 1000 * statistics.median(lat) if lat else None,
                "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
                "errors": len(self.errors[op]),
                "first_errors": self.errors[op][:3],
            }
        return rows


async def uploader(client, rec: Recorder, photo: bytes, stop_at: float, ids: list, counter) -> None:
    while time.monotonic() < stop_at:
        n = next(counter)
        body = unique(photo, n)
        r = await rec.timed("upload", client.post(
            "/api/media/upload", files=[("files", (f"load-{n}.jpg", body, "image/jpeg"))]))
        if r is not None and r.status_code == 200:
            ids.extend(x["media_id"] for x in r.json()["results"] if x.get("media_id"))


async def reader(client, rec: Recorder, stop_at: float, ids: list) -> None:
    while time.monotonic() < stop_at:
        await rec.timed("list", client.get("/api/media", params={"limit": 50}))
        if ids:
            media_id = random.choice(ids)
            await rec.timed("detail", client.get(f"/api/media/{media_id}"))
        await rec.timed("queue_status", client.get("/api/queue/status"))
        await rec.timed("health", client.get("/api/health"))


async def drive(url: str, api_key: str | None, args, photo: bytes, seconds: float) -> Recorder:
    import itertools

    rec, ids, counter = Recorder(), [], itertools.count()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=args.uploaders + args.readers + 4)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as client:
        stop_at = time.monotonic() + seconds
        await asyncio.gather(
            *(uploader(client, rec, photo, stop_at, ids, counter) for _ in range(args.uploaders)),
            *(reader(client, rec, stop_at, ids) for _ in range(args.readers)),
        )
    return rec


def system_processes() -> dict[int, str]:
    """pid → a readable name, for every process of a local system (Ray's and Postgres's)."""
    found = {os.getpid(): "bench driver"}
    for p in psutil.process_iter(["cmdline", "name"]):
        cmd = p.info["cmdline"] or []
        head = cmd[0] if cmd else (p.info["name"] or "")
        if head.startswith("ray::") or "raylet" in head or "gcs_server" in head or (
            p.info["name"] or "").startswith("postgres"):
            found[p.pid] = head.split(" ")[0][:80] if head.startswith("ray::") else (
                p.info["name"] or head)[:80]
    return found


def rss_by_process() -> dict[str, dict]:
    out = {}
    for pid, name in system_processes().items():
        try:
            out[f"{name} [{pid}]"] = {"pid": pid, "rss_mb": psutil.Process(pid).memory_info().rss / 2**20}
        except psutil.Error:
            continue
    return out


def memory_growth(before: dict, after: dict) -> dict:
    rows = {}
    for key, b in before.items():
        if key in after:
            growth = 100 * (after[key]["rss_mb"] - b["rss_mb"]) / b["rss_mb"] if b["rss_mb"] else 0
            rows[key] = {"start_mb": b["rss_mb"], "end_mb": after[key]["rss_mb"], "growth_pct": growth}
    total_b = sum(r["start_mb"] for r in rows.values())
    total_a = sum(r["end_mb"] for r in rows.values())
    return {"processes": rows, "total_start_mb": total_b, "total_end_mb": total_a,
            "total_growth_pct": 100 * (total_a - total_b) / total_b if total_b else 0,
            "exited_or_started": sorted(set(before) ^ set(after))}


def start_local_system(stack: ExitStack, args) -> str:
    import ray
    from ray import serve

    from bench.queue_bench import admin_url, fresh_database
    from cluster.scheduler import get_or_start_scheduler
    from cluster.settings import Settings
    from cluster.tasks import APP_NAME
    from db.migrate import migrate
    from serve_app.app import build_depthmill_app
    from tests.utils.s3 import free_port

    admin, server = admin_url()
    if server is not None:
        stack.callback(server.stop)
    url = fresh_database(admin, "depthmill_load_bench")
    migrate(url)
    home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    port = free_port()
    settings = Settings(home=home, database_url=url, model="tiny", port=port,
                        upload_rate_per_minute=1_000_000, serve_num_cpus=0.25, db_pool_size=8,
                        max_file_size=64 * 2**20)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    stack.callback(ray.shutdown)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
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
    parser.add_argument("--photo-mb", type=float, default=2.0)
    parser.add_argument("--soak", type=float, default=0, help="soak for this many seconds instead")
    parser.add_argument("--url", help="an already running gateway (default: start one here)")
    parser.add_argument("--api-key", default=os.environ.get("DEPTHMILL_API_KEY"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    photo = base_photo(args.photo_mb)
    results: dict = {"uploaders": args.uploaders, "readers": args.readers,
                     "photo_bytes": len(photo), "cpus": os.cpu_count(), "model": "tiny"}
    with ExitStack() as stack:
        url = args.url or start_local_system(stack, args)
        if args.soak:
            warmup = min(WARMUP_S, args.soak / 5)
            asyncio.run(drive(url, args.api_key, args, photo, warmup))
            before = rss_by_process()
            rec = asyncio.run(drive(url, args.api_key, args, photo, args.soak))
            results["memory"] = memory_growth(before, rss_by_process())
            seconds = args.soak
        else:
            rec = asyncio.run(drive(url, args.api_key, args, photo, args.seconds))
            seconds = args.seconds
        results.update(seconds=seconds, ops=rec.table(seconds))
    print_table(results["ops"])
    if "memory" in results:
        mem = results["memory"]
        print(f"\nmemory: {mem['total_start_mb']:.0f} MB → {mem['total_end_mb']:.0f} MB "
              f"({mem['total_growth_pct']:+.1f}%) over {len(mem['processes'])} processes")
        worst = sorted(mem["processes"].items(), key=lambda kv: -kv[1]["growth_pct"])[:8]
        for name, row in worst:
            print(f"  {name:>60} {row['start_mb']:7.0f} → {row['end_mb']:7.0f} MB {row['growth_pct']:+6.1f}%")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
