"""Webhook delivery: events a second to a loopback receiver, and the time from the committed
change to the receiver's 2xx.

    python -m bench.events_bench --json docs/results/events.json

A fresh database with one webhook subscribed to ``item.completed`` at a loopback receiver
(uvicorn, answering 204 at once), the real deliverer (``cluster.events.delivery.Deliverer``,
in this process, not as a Ray actor) and a claimer completing ``--items`` queue items in
batches of ``--batch`` through ``queue.complete_and_claim``, as the scheduler does, at
``--rate`` items a second (0: as fast as it can). The latency of an event is the receiver's
clock at the request minus the claimer's clock just after the commit that completed the item.
Every delivery is checked with the ``standardwebhooks`` package as a receiver would.

The queue's cost of writing events (on against off, and pgqueuer) is ``bench.queue_bench``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import psycopg
import uvicorn

from bench.queue_bench import admin_url, depthmill_fill, drop_database, fresh_database
from bench.report import write_json
from cluster.config.settings import Settings
from cluster.events import signing
from cluster.events.delivery import Deliverer
from db import queue, webhooks
from db.migrate import migrate

MODEL = "tiny"


class Receiver:
    """An ASGI app that verifies each delivery and notes when it came, by item id."""

    def __init__(self, secret: str) -> None:
        from standardwebhooks.webhooks import Webhook

        self.verifier = Webhook(secret)
        self.arrived: dict[str, float] = {}
        self.ids: set[str] = set()
        self.bad = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        now = time.time()
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            self.verifier.verify(body, headers)
            item = json.loads(body)["data"]["item_id"]
            self.arrived.setdefault(item, now)
            self.ids.add(headers["webhook-id"])
        except Exception:  # noqa: BLE001 - counted and reported, the run goes on
            self.bad += 1
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def serve(app, port: int) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def complete_items(url: str, items: int, batch: int, rate: float) -> dict[str, float]:
    """Claim and complete every queued item, noting the commit time of each completion."""
    committed: dict[str, float] = {}
    finished: list[queue.Lease] = []
    interval = batch / rate if rate > 0 else 0.0
    with psycopg.connect(url, autocommit=True) as conn:
        next_at = time.monotonic()
        while True:
            outputs = {lease.item_id: [{"format": "png16", "width": 518, "height": 392}]
                       for lease in finished}
            done, claimed = queue.complete_and_claim(conn, finished, batch, "bench", 60,
                                                     model_id=MODEL, outputs=outputs)
            now = time.time()
            committed.update({str(i): now for i in done})
            finished = [c.lease for c in claimed]
            if not claimed and not finished:
                break
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    assert len(committed) == items, f"completed {len(committed)} of {items}"
    return committed


async def run_deliverer(settings: Settings, until: threading.Event) -> dict:
    deliverer = Deliverer(settings, autostart=False)
    await deliverer.start()
    while not until.is_set():
        await asyncio.sleep(0.05)
    status = await deliverer.status()
    await deliverer.shutdown()
    return status


def measure(admin: str, items: int, batch: int, rate: float) -> dict:
    url = fresh_database(admin, "depthmill_events_bench")
    migrate(url)
    depthmill_fill(url, items)
    secret = signing.new_secret()
    receiver = Receiver(secret)
    port = free_port()
    server = serve(receiver, port)
    with psycopg.connect(url, autocommit=True) as conn:
        webhooks.create(conn, f"http://127.0.0.1:{port}/hook", ["item.completed"], secret)
    settings = Settings(database_url=url, model=MODEL, webhook_allow_private=True)
    done = threading.Event()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(asyncio.run(run_deliverer(settings, done))))
    thread.start()
    try:
        started = time.time()
        committed = complete_items(url, items, batch, rate)
        deadline = time.time() + 120
        while len(receiver.arrived) < items and time.time() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        thread.join()
        server.should_exit = True
    delivered = len(receiver.arrived)
    latencies = sorted((receiver.arrived[i] - committed[i]) * 1000
                       for i in receiver.arrived if i in committed)
    last = max(receiver.arrived.values()) if receiver.arrived else started
    drop_database(admin, url)
    return {
        "items": items,
        "batch": batch,
        "rate": rate,
        "delivered": delivered,
        "unverified": receiver.bad,
        "webhook_ids": len(receiver.ids),  # one per event, however often it was sent
        "events_per_s": delivered / (last - started) if delivered else 0.0,
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] if latencies else None,
        "deliverer": result.get("counts"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write results here")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--rates", default="100,0",
                        help="items completed a second, comma-separated (0: as fast as it can)")
    args = parser.parse_args(argv)
    admin, server = admin_url()
    runs = [measure(admin, args.items, args.batch, float(r)) for r in args.rates.split(",") if r]
    print(f"\n{'rate':>8} {'delivered':>10} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'unverified':>11}")
    for r in runs:
        rate = f"{r['rate']:.0f}/s" if r["rate"] else "max"
        print(f"{rate:>8} {r['delivered']:>10} {r['events_per_s']:>9.0f} {r['p50_ms'] or 0:>8.1f}"
              f" {r['p99_ms'] or 0:>8.1f} {r['unverified']:>11}")
    write_json(args.json, {"runs": runs})
    if server is not None:
        server.stop()
    return 0 if all(r["delivered"] == r["items"] and not r["unverified"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
