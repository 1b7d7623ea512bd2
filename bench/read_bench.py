"""The read side with a long history: /api/health, /api/queue/status and /api/queue/stats with
1,000,000 completed items in the database, through the gateway's FastAPI app (no Ray: the depth
deployment and the scheduler are absent, which health reports from its background state).

    python -m bench.read_bench --completed 1000000 --json bench/results/read_side.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from bench.queue_bench import admin_url, drop_database, fresh_database
from bench.report import write_json
from cluster.config.settings import Settings
from db.migrate import migrate
from serve_app.api.main import create_api
from serve_app.gateway import build_context

import psycopg  # noqa: I001

ENDPOINTS = ("/api/health", "/api/queue/status", "/api/queue/stats", "/api/queue/summary")


def fill(url: str, completed: int, queued: int) -> None:
    """Media rows and their archived items in a few statements (the archive's triggers count
    them as a completing statement would), plus a live queue."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            WITH m AS (
                INSERT INTO media_items (kind, storage_key, sha256, mime, bytes)
                SELECT CASE WHEN g %% 10 = 0 THEN 'video' ELSE 'photo' END, 'originals/' || g,
                       encode(sha256(g::text::bytea), 'hex'), 'application/octet-stream', 1000
                FROM generate_series(1, %(n)s) g
                RETURNING id, kind, mime, storage_key
            )
            INSERT INTO processing_queue_completed
                (media_id, model_id, kind, bytes, mime, storage_key, status, priority, attempts,
                 queued_at, started_at, completed_at, processing_duration)
            SELECT id, 'tiny', kind, 1000, mime, storage_key, 'completed', 1, 1, now() - interval '3 days',
                   now() - interval '2 days', now() - interval '2 days', 0.5
            FROM m
            """,
            {"n": completed},
        )
        conn.execute(
            """
            WITH m AS (
                INSERT INTO media_items (kind, storage_key, sha256, mime, bytes)
                SELECT 'photo', 'originals/q' || g, encode(sha256(('q' || g)::bytea), 'hex'),
                       'application/octet-stream', 1000
                FROM generate_series(1, %(n)s) g
                RETURNING id, mime, storage_key
            )
            INSERT INTO processing_queue
                (media_id, model_id, kind, bytes, mime, storage_key, status, priority)
            SELECT id, 'tiny', 'photo', 1000, mime, storage_key, 'queued', 1 FROM m
            """,
            {"n": queued},
        )
        conn.execute("VACUUM ANALYZE")


def time_endpoints(client: TestClient, requests: int) -> dict[str, dict[str, float]]:
    results = {}
    for path in ENDPOINTS:
        client.get(path)  # warm: connections, the health state
        samples = []
        for _ in range(requests):
            started = time.perf_counter()
            response = client.get(path)
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code in (200, 503), response.text
        samples.sort()
        results[path] = {"p50_ms": statistics.median(samples),
                         "p99_ms": samples[int(0.99 * (len(samples) - 1))]}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--completed", type=int, default=1_000_000)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    admin, server = admin_url()
    url = fresh_database(admin, "depthmill_read_bench")
    try:
        migrate(url)
        started = time.perf_counter()
        fill(url, args.completed, args.queued)
        print(f"filled {args.completed:,} completed and {args.queued:,} queued items in "
              f"{time.perf_counter() - started:.0f} s")
        with tempfile.TemporaryDirectory() as home:
            settings = Settings(database_url=url, home=Path(home), model="tiny")
            app = create_api()
            app.state.ctx = build_context(settings)
            with TestClient(app) as client:
                results = time_endpoints(client, args.requests)
    finally:
        drop_database(admin, url)
        if server is not None:
            server.stop()
    print(f"\n{'endpoint':<22} {'p50 ms':>8} {'p99 ms':>8}   ({args.completed:,} completed)")
    for path, r in results.items():
        print(f"{path:<22} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    write_json(args.json, {"completed": args.completed, "queued": args.queued,
                           "requests": args.requests, "endpoints": results})


if __name__ == "__main__":
    main()
