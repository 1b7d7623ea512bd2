"""Node-loss faults with a few hundred items in flight: the scenarios of tests/e2e/test_node_loss.py
(a worker node removed, the scheduler's node removed, a gateway replica killed mid-upload, the
whole cluster stopped and started again) on the same multi-node cluster on one machine, with
the figures of each.

    python -m bench.node_loss_bench --json docs/results/node_loss.json [--items 300]
                                    [--scenarios worker,scheduler,gateway,restart]

A fresh database on the Postgres at DEPTHMILL_TEST_ADMIN_URL / 127.0.0.1:5432 (or an embedded
one); the cluster runs in a child process with a Ray of its own (devkit.node_loss).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.queue_bench import admin_url, drop_database, fresh_database
from bench.report import write_json
from db.migrate import migrate
from devkit.node_loss import SCENARIOS, run_in_own_process

# What each scenario reports, in the table's words.
COLUMNS = {
    "worker": [("degraded_after_s", "health degraded after"),
               ("healthy_after_node_added_s", "healthy after a node was added"),
               ("all_done_after_fault_s", "all done after the fault")],
    "scheduler": [("scheduler_restarted_after_s", "scheduler restarted elsewhere after"),
                  ("max_lease_overdue_s", "longest a lease stayed expired"),
                  ("all_done_after_fault_s", "all done after the fault")],
    "gateway": [("uploads_retried", "uploads that had to be retried"),
                ("served_after_kill_s", "next request served after"),
                ("replica_replaced_after_s", "replica replaced after")],
    "restart": [("cluster_start_s", "new cluster started in"),
                ("depthmill_up_s", "`depthmill up` took"),
                ("all_done_after_stop_s", "all done after the stop")],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300, help="photos in flight per scenario")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    scenarios = tuple(s for s in args.scenarios.split(",") if s)

    admin, server = admin_url()
    url = fresh_database(admin, "depthmill_node_loss_bench")
    try:
        migrate(url)
        with tempfile.TemporaryDirectory(prefix="depthmill-node-loss-") as home:
            started = time.monotonic()
            results = run_in_own_process(url, Path(home), items=args.items,
                                         timeout=args.timeout, scenarios=scenarios)
            wall = time.monotonic() - started
    finally:
        drop_database(admin, url)
        if server is not None:
            server.stop()

    log = results.pop("log")
    print(f"{args.items} items per scenario, {wall:.0f} s in all")
    print(f"{'scenario':<10} {'ok':<4} {'seconds':>8}  figures")
    for name in scenarios:
        r = results.get(name, {"ok": False, "error": "did not run"})
        figures = ", ".join(f"{label} {r[key]}" for key, label in COLUMNS[name] if key in r)
        print(f"{name:<10} {'yes' if r['ok'] else 'NO':<4} {r.get('seconds', '-'):>8}  "
              f"{figures or r.get('error', '')[:200]}")
    failed = [n for n in scenarios if not results.get(n, {}).get("ok")]
    if failed:
        print(log[-3000:], file=sys.stderr)
    write_json(args.json, {"items": args.items, "wall_s": round(wall, 1), **results})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
