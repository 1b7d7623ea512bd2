"""Queue throughput and claim latency: depthmill's queue against pgqueuer on the same Postgres.

    python -m bench.queue_bench --json bench/results/queue.json

Throughput: ``--jobs`` no-op items, ``--claimers`` processes each looping claim → complete at
batch sizes 1, 10 and 100, each system in its own database on the same server, in the same run:
- depthmill: ``complete_and_claim``, the last batch completed and the next claimed in one
  statement, as the scheduler records finished items and claims for the slots they free (one
  commit per cycle);
- depthmill, events off: the same loop with the events outbox off (``SET depthmill.events =
  'off'``), to measure what writing item.started and item.completed costs;
- depthmill, two commits: ``claim_batch``, then ``complete_many``, each its own transaction;
- pgqueuer: ``dequeue``, then ``log_jobs``, each its own transaction.
All get the same kind of workload: priorities spread the way real sizes spread them, arriving in
no order in batches of 1,000 to each system's own enqueue (pgqueuer gets the stream of the
depthmill fill before it), and every fill ends with a checkpoint, so every drain starts from the
same WAL state. ``--rounds`` take turns at the four and the median round is reported, and with it
the medians of each round's ratios (on/off, on/pgqueuer), which leave out the drift between
rounds.
Latency: p50/p99 of one ``claim_batch(10)`` with 10k and 1M rows queued (still queued at the last
claim: each queue is filled with what its claims take on top), filled the same way, at
``--latency-rate`` claims a second (200: 2,000 items/s, well above what a GPU cluster processes).
The sizes take turns in blocks of ``--latency-block`` claims, so the machine's drift falls on both
alike.
What events cost per cycle (``--cycle-batches``): one connection alone runs ``complete_and_claim``
cycles of each batch size, events on and off in alternating blocks, and the median cycle of each
is compared; the difference over the events written (item.completed and item.started for each
item, one outbox row a cycle) is what one event costs. Without the other claimers' contention it
is steadier than the throughput loops' ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.report import write_json
from db import queue
from db.migrate import migrate

ENTRYPOINT = "noop"
MODEL = "tiny"
FILL_BATCH = 1_000


# ------------------------------------------------------------------------------------ servers


def admin_url() -> tuple[str, object | None]:
    url = os.environ.get("DEPTHMILL_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        psycopg.connect(url, connect_timeout=3).close()
        return url, None
    except psycopg.OperationalError:
        from db.embedded import EmbeddedPostgres

        home = Path(os.environ.get("DEPTHMILL_HOME", Path.home() / ".cache" / "depthmill-bench"))
        home.mkdir(parents=True, exist_ok=True)
        server = EmbeddedPostgres(home / "postgres")
        return server.url, server


def fresh_database(admin: str, name: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_conninfo(admin, dbname=name)


def drop_database(admin: str, url: str) -> None:
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ------------------------------------------------------------------------------------ depthmill


def depthmill_fill(url: str, jobs: int) -> list[int]:
    """Queue ``jobs`` items; returns their priorities in arrival order."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE media_items, processing_queue_completed, event_batches CASCADE")
        conn.execute(
            """
            INSERT INTO media_items (kind, storage_key, sha256, mime, bytes)
            SELECT CASE WHEN random() < 0.8 THEN 'photo' ELSE 'video' END,
                   'originals/' || g.id, encode(sha256(g.id::text::bytea), 'hex'),
                   'application/octet-stream', (random() * 50000000)::bigint
            FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, %s)) g
            """,
            [jobs],
        )
        conn.execute("ANALYZE media_items")  # so each batch's enqueue looks its media up by key
        # Enqueued a batch at a time in arrival order, as an import or a stream of uploads
        # brings them: priorities arrive in no order.
        media_ids = [m for (m,) in conn.execute("SELECT id FROM media_items ORDER BY ctid")]
        for start in range(0, len(media_ids), FILL_BATCH):
            queue.enqueue_many(conn, media_ids[start:start + FILL_BATCH], MODEL)
        conn.execute("VACUUM ANALYZE processing_queue")
        conn.execute("VACUUM ANALYZE media_items")
        # Flush the fill's dirty pages now, so the checkpoint that writes them does not land in
        # the middle of the measurement.
        conn.execute("CHECKPOINT")
        # Arrival order: the same stream goes to pgqueuer's enqueue, which keeps it as it comes
        # (depthmill's enqueue lays out each batch in claim order).
        return [p for (p,) in conn.execute(
            "SELECT depthmill_default_priority(kind, bytes) FROM media_items ORDER BY ctid")]


def depthmill_worker(url: str, batch: int, barrier, results) -> None:
    """Claim, then complete what was claimed together with the next claim (``complete_and_claim``,
    one statement), as the scheduler records finished items and claims for the slots they free:
    one commit (one WAL flush) per cycle."""
    _drain_depthmill(url, batch, barrier, results, one_commit=True)


def depthmill_events_off_worker(url: str, batch: int, barrier, results) -> None:
    """``depthmill_worker`` writing no events: what the outbox costs the queue."""
    _drain_depthmill(url, batch, barrier, results, one_commit=True, events=False)


def depthmill_two_commits_worker(url: str, batch: int, barrier, results) -> None:
    """Claim, commit, complete, commit: pgqueuer's loop (dequeue, then log_jobs)."""
    _drain_depthmill(url, batch, barrier, results, one_commit=False)


def _drain_depthmill(url: str, batch: int, barrier, results, *, one_commit: bool,
                     events: bool = True) -> None:
    owner = f"bench-{os.getpid()}"
    done = 0
    finished: list[queue.Lease] = []
    with psycopg.connect(url, autocommit=True) as conn:
        if not events:
            conn.execute("SET depthmill.events = 'off'")
        barrier.wait()
        started = time.perf_counter()
        while True:
            if one_commit:
                completed, items = queue.complete_and_claim(conn, finished, batch, owner, 60, model_id=MODEL)
                done += len(completed)
                finished = [i.lease for i in items]
            else:
                items = queue.claim_batch(conn, batch, owner, 60, model_id=MODEL)
                done += len(queue.complete_many(conn, [i.lease for i in items]))
            if not items and not _anything_queued(conn):
                break
            # else rows were locked by another claimer (SKIP LOCKED passes over them):
            # the scheduler would claim again when woken; so does this.
        results.put((done, started, time.perf_counter()))


def _anything_queued(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT EXISTS (SELECT FROM processing_queue WHERE status = 'queued')").fetchone()[0]


# ------------------------------------------------------------------------------------ pgqueuer


async def _pgqueuer_queries(url: str):
    from pgqueuer.queries import Queries

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    return conn, Queries.from_psycopg_connection(conn)


def pgqueuer_install(url: str) -> None:
    async def run() -> None:
        conn, q = await _pgqueuer_queries(url)
        await q.install()
        await conn.close()

    asyncio.run(run())


def pgqueuer_fill(url: str, priorities: list[int]) -> None:
    """Queue one job per priority (depthmill's: lower first), in the same order and batches."""

    async def run() -> None:
        conn, q = await _pgqueuer_queries(url)
        await q.clear_queue()
        await q.clear_queue_log()
        for start in range(0, len(priorities), FILL_BATCH):
            chunk = priorities[start:start + FILL_BATCH]
            n = len(chunk)
            # pgqueuer takes the highest priority first.
            await q.enqueue([ENTRYPOINT] * n, [None] * n, [queue.MAX_PRIORITY - p for p in chunk])
        await conn.execute("VACUUM ANALYZE pgqueuer")
        await conn.execute("CHECKPOINT")  # as depthmill_fill does
        await conn.close()

    asyncio.run(run())


def pgqueuer_worker(url: str, batch: int, barrier, results) -> None:
    from pgqueuer.ports.repository import EntrypointExecutionParameter
    from pgqueuer.types import QueueEntrypoint, QueueManagerId

    async def run() -> None:
        conn, q = await _pgqueuer_queries(url)
        entrypoints = {QueueEntrypoint(ENTRYPOINT): EntrypointExecutionParameter(concurrency_limit=0)}
        manager = QueueManagerId(uuid.uuid4())
        done = 0
        barrier.wait()
        started = time.perf_counter()
        while True:
            jobs = await q.dequeue(
                batch_size=batch,
                entrypoints=entrypoints,
                queue_manager_id=manager,
                global_concurrency_limit=None,
                heartbeat_timeout=timedelta(seconds=60),
            )
            if not jobs:
                break
            await q.log_jobs([(job, "successful", None) for job in jobs])
            done += len(jobs)
        results.put((done, started, time.perf_counter()))
        await conn.close()

    asyncio.run(run())


# ------------------------------------------------------------------------------------ runs


def drain(worker, url: str, batch: int, claimers: int) -> tuple[int, float]:
    """Run ``claimers`` processes until the queue is empty; (jobs done, wall seconds)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(claimers)
    results = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(url, batch, barrier, results)) for _ in range(claimers)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    done = sum(o[0] for o in outcomes)
    wall = max(o[2] for o in outcomes) - min(o[1] for o in outcomes)
    return done, wall


def throughput(admin: str, batches: list[int], jobs: int, claimers: int, rounds: int) -> dict:
    dm_url = fresh_database(admin, "depthmill_bench")
    migrate(dm_url)
    pq_url = fresh_database(admin, "pgqueuer_bench")
    pgqueuer_install(pq_url)
    # Each round fills and drains each loop in turn, so the machine's drift falls on all alike.
    depthmill_loops = {"depthmill_jobs_per_s": depthmill_worker,
                       "depthmill_events_off_jobs_per_s": depthmill_events_off_worker,
                       "depthmill_two_commits_jobs_per_s": depthmill_two_commits_worker}
    keys = [*depthmill_loops, "pgqueuer_jobs_per_s"]
    out: dict[str, dict] = {key: {} for key in keys}
    out["paired_ratios"] = {}
    for batch in batches:
        n = jobs if batch > 1 else max(jobs // 5, 1000)
        runs: dict[str, list[float]] = {key: [] for key in keys}
        for _ in range(rounds):
            for key, worker in depthmill_loops.items():
                stream = depthmill_fill(dm_url, n)  # a new draw, from the same spread
                runs[key].append(_rate(drain(worker, dm_url, batch, claimers), n))
            pgqueuer_fill(pq_url, stream)  # the last depthmill fill's stream
            runs["pgqueuer_jobs_per_s"].append(_rate(drain(pgqueuer_worker, pq_url, batch, claimers), n))
        for key in keys:
            out[key][str(batch)] = statistics.median(runs[key])
        out["paired_ratios"][str(batch)] = paired_ratios(runs)
        print(f"  batch {batch:>3} ({n} jobs), jobs/s per round:", file=sys.stderr)
        for key in keys:
            print(f"    {key.removesuffix('_jobs_per_s'):>22} {_rates(runs[key])}", file=sys.stderr)
    return out


def paired_ratios(runs: dict[str, list[float]]) -> dict[str, float]:
    """Medians of the ratios within each round. The loops of a round run back to back, so a
    round's ratio leaves out the drift between rounds that moves the medians of the rates."""
    on, off = runs["depthmill_jobs_per_s"], runs["depthmill_events_off_jobs_per_s"]
    pq = runs["pgqueuer_jobs_per_s"]
    return {"on_over_off": statistics.median(a / b for a, b in zip(on, off)),
            "on_over_pgqueuer": statistics.median(a / b for a, b in zip(on, pq)),
            "off_over_pgqueuer": statistics.median(a / b for a, b in zip(off, pq))}


def _rate(drained: tuple[int, float], expected: int) -> float:
    done, wall = drained
    assert done == expected, f"finished {done} of {expected}"
    return done / wall


def _rates(rates: list[float]) -> str:
    return " ".join(f"{r:>6.0f}" for r in rates)


CLAIM_SIZE = 10


@dataclass
class LatencyRun:
    """One queue size's claims, gathered over the blocks the sizes take turns at."""

    timings_ms: list[float] = field(default_factory=list)
    wal_bytes: int = 0
    full_page_images: int = 0

    def measure(self, url: str, claims: int, interval_s: float) -> None:
        """``claims`` claims at one every ``interval_s``, """
        wal_before = _wal(url)
        with psycopg.connect(url, autocommit=True) as conn:
            tick = time.perf_counter()
            for _ in range(claims):
                # At a steady rate, as a scheduler claims at its depth service's pace, rather
                # than back to back.
                tick += interval_s
                time.sleep(max(0.0, tick - time.perf_counter()))
                started = time.perf_counter()
                items = queue.claim_batch(conn, CLAIM_SIZE, "latency", 60, model_id=MODEL)
                self.timings_ms.append((time.perf_counter() - started) * 1000)
                assert len(items) == CLAIM_SIZE, "the fill holds more than the claims take"
                queue.complete_many(conn, [i.lease for i in items])
        wal_after = _wal(url)
        self.wal_bytes += wal_after[0] - wal_before[0]
        self.full_page_images += wal_after[1] - wal_before[1]

    def summary(self, interval_s: float) -> dict[str, float]:
        timings = sorted(self.timings_ms)
        claims = len(timings)
        return {
            "p50_ms": statistics.median(timings),
            "p99_ms": timings[min(claims - 1, int(claims * 0.99))],
            "samples": claims,
            "claims_per_s": 1 / interval_s,
            # Claim + completion of 10 items. Full-page images are written the first time a
            # page changes after a checkpoint: with 1M rows claimed in priority order, most pages
            # are new.
            "wal_kb_per_cycle": self.wal_bytes / claims / 1024,
            "full_page_images_per_cycle": self.full_page_images / claims,
        }


def claim_latency(
    admin: str, sizes: list[int], samples: int, interval_s: float, block: int
) -> dict[str, dict[str, float]]:
    """Claim latency with each of ``sizes`` rows queued, ``samples`` claims each.

    Each queue holds ``rows`` items when its last claim runs, as when its first does: it is
    filled with what the claims take on top (a 10k queue drained by 20k claimed items would time
    claims of an empty queue). The sizes take turns in blocks of ``block`` claims, so a machine
    whose speed drifts (a shared VM's does, by a third over minutes) slows every size alike.
    """
    urls = {}
    for rows in sizes:
        urls[rows] = fresh_database(admin, f"depthmill_bench_latency_{rows}")
        migrate(urls[rows])
        depthmill_fill(urls[rows], rows + samples * CLAIM_SIZE)
    runs = {rows: LatencyRun() for rows in sizes}
    for done in range(0, samples, block):
        for rows, url in urls.items():
            runs[rows].measure(url, min(block, samples - done), interval_s)
    for rows in sizes:
        drop_database(admin, urls[rows])
    return {str(rows): run.summary(interval_s) for rows, run in runs.items()}


def _wal(url: str) -> tuple[int, int]:
    """(WAL bytes written, full-page images written) by the server so far, once the database's
    other connections have gone: a backend adds its last WAL statistics when it exits."""
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(100):
            others = conn.execute(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND pid <> pg_backend_pid()""").fetchone()[0]
            if not others:
                break
            time.sleep(0.01)
        return conn.execute("SELECT wal_bytes::bigint, wal_fpi FROM pg_stat_wal").fetchone()


def events_cycle(admin: str, batch: int, blocks: int = 16, per_block: int = 20) -> dict:
    """Median milliseconds of one ``complete_and_claim`` cycle of ``batch`` items with events on
    and off, the modes alternating in blocks of ``per_block`` cycles on one connection."""
    url = fresh_database(admin, "depthmill_bench_cycle")
    migrate(url)
    depthmill_fill(url, batch * (2 * blocks * per_block + 4))
    times: dict[str, list[float]] = {"on": [], "off": []}
    with psycopg.connect(url, autocommit=True) as conn:
        cycle = functools.partial(queue.complete_and_claim, conn, n=batch, owner="cycle",
                                  lease_seconds=600, model_id=MODEL)
        items = queue.claim_batch(conn, batch, "cycle", 600, model_id=MODEL)
        for _ in range(3):  # warm the plans and the caches
            _, items = cycle([i.lease for i in items])
        for block in range(2 * blocks):
            mode = ("on", "off")[block % 2]
            conn.execute(sql.SQL("SET depthmill.events = {}").format(sql.Literal(mode)))
            for _ in range(per_block):
                started = time.perf_counter()
                _, items = cycle([i.lease for i in items])
                times[mode].append(time.perf_counter() - started)
    drop_database(admin, url)
    on, off = (statistics.median(times[m]) * 1000 for m in ("on", "off"))
    return {"on_ms": on, "off_ms": off, "off_over_on": off / on,
            "us_per_event": (on - off) * 1000 / (2 * batch)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write results here")
    parser.add_argument("--claimers", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds; the median is kept")
    parser.add_argument("--batches", default="1,10,100")
    parser.add_argument("--latency-rows", default="10000,1000000")
    parser.add_argument("--latency-samples", type=int, default=2000)
    parser.add_argument("--latency-rate", type=float, default=200,
                        help="claims of 10 per second in the latency runs")
    parser.add_argument("--cycle-batches", default="10,100",
                        help="batch sizes of the one-connection events on/off cycle")
    parser.add_argument("--latency-block", type=int, default=200,
                        help="claims in a row at one queue size before the next size's turn")
    args = parser.parse_args(argv)

    admin, server = admin_url()
    batches = [int(b) for b in args.batches.split(",") if b]
    with psycopg.connect(admin) as conn:
        pg_version = conn.execute("SHOW server_version").fetchone()[0]
    print(f"Postgres {pg_version}, {args.claimers} claimers, {os.cpu_count()} CPUs", file=sys.stderr)
    results: dict = {
        "postgres": pg_version,
        "claimers": args.claimers,
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        **throughput(admin, batches, args.jobs, args.claimers, args.rounds),
    }
    sizes = [int(r) for r in args.latency_rows.split(",") if r]
    results["claim_latency"] = claim_latency(
        admin, sizes, args.latency_samples, 1 / args.latency_rate, args.latency_block)
    for rows, lat in results["claim_latency"].items():
        print(f"  latency with {rows} queued: {lat}", file=sys.stderr)
    cycles = [int(b) for b in args.cycle_batches.split(",") if b]
    results["events_cycle"] = {str(b): events_cycle(admin, b) for b in cycles}

    print(f"\n{'batch':>6} {'depthmill jobs/s':>18} {'events off':>11} {'on/off':>7}"
          f" {'two commits':>12} {'pgqueuer jobs/s':>17} {'ratio':>7} {'two commits ratio':>18}")
    for batch in batches:
        dm = results["depthmill_jobs_per_s"][str(batch)]
        off = results["depthmill_events_off_jobs_per_s"][str(batch)]
        dm2 = results["depthmill_two_commits_jobs_per_s"][str(batch)]
        pq = results["pgqueuer_jobs_per_s"][str(batch)]
        print(f"{batch:>6} {dm:>18.0f} {off:>11.0f} {dm / off:>7.2f} {dm2:>12.0f} {pq:>17.0f}"
              f" {dm / pq:>7.2f} {dm2 / pq:>18.2f}")
    print(f"\n{'batch':>6} {'paired on/off':>14} {'on/pgqueuer':>12} {'off/pgqueuer':>13}"
          "   (medians of each round's ratios)")
    for batch in batches:
        r = results["paired_ratios"][str(batch)]
        print(f"{batch:>6} {r['on_over_off']:>14.2f} {r['on_over_pgqueuer']:>12.2f}"
              f" {r['off_over_pgqueuer']:>13.2f}")
    print(f"\n{'queued rows':>12} {'claim p50 ms':>13} {'claim p99 ms':>13} {'WAL KB/cycle':>13} {'FPI/cycle':>10}")
    for rows, lat in results["claim_latency"].items():
        print(f"{rows:>12} {lat['p50_ms']:>13.2f} {lat['p99_ms']:>13.2f}"
              f" {lat['wal_kb_per_cycle']:>13.1f} {lat['full_page_images_per_cycle']:>10.1f}")

    if cycles:
        print(f"\n{'batch':>6} {'cycle, events on':>17} {'off':>9} {'off/on':>7} {'per event':>10}")
        for batch, c in results["events_cycle"].items():
            print(f"{batch:>6} {c['on_ms']:>14.2f} ms {c['off_ms']:>6.2f} ms {c['off_over_on']:>7.2f}"
                  f" {c['us_per_event']:>7.1f} µs")
    write_json(args.json, results)
    if server is not None:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
