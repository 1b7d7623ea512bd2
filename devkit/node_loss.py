"""Node-loss faults on a multi-node Ray cluster on one machine, run as a process of its own.

    python -m devkit.node_loss --database-url URL --home DIR --json OUT [--items 50]

A head and two worker nodes (``ray.cluster_utils.Cluster``); the workers alone offer the custom
resources the depth replicas, the processing tasks and the scheduler are given, so each fault
takes away work, not the control plane. One cluster serves the scenarios in turn, each with
``--items`` new photos in flight when the fault lands:

worker     a worker node removed (kill -9 of its raylet and workers); a new one added later
scheduler  the node holding the scheduler actor removed; Ray restarts it on the other worker,
           which finishes the work alone
gateway    a gateway replica killed while it serves the HTTP port itself, uploads in flight
restart    the whole cluster stopped, a new one started, `depthmill up` (``runtime.up``) again

After each: every item completed exactly once, one png16 depth map per media, nothing left
`processing`, no lease overdue past the recovery's period (or past the scheduler's restart, when
it was lost). Results (pass or the assertion, and the figures) are written as JSON for the
caller to assert on, so a failure names its scenario.

Its Ray is its own: RAY_TMPDIR points at a directory of this run (sessions, sockets and the
"current cluster" file), and RAY_ADDRESS at its cluster, never at another one on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

# Depth replicas and processing tasks need these; only the worker nodes have them.
# Every node offers one gateway slot, so the two gateway replicas serve the port from two nodes.
DEPTH_NODE, WORK_NODE, GATEWAY_NODE = "depth_node", "work_node", "gateway_node"
WORKER_NODE_ARGS = {"num_cpus": 2, "resources": {DEPTH_NODE: 1, WORK_NODE: 1, GATEWAY_NODE: 1}}
HEAD_NODE_ARGS = {"num_cpus": 2, "include_dashboard": False, "resources": {GATEWAY_NODE: 1}}
SCENARIOS = ("worker", "scheduler", "gateway", "restart")
LEASE_S = 4.0
# Past its expiry a lease waits at most one recovery period (LEASE_S) and a claim cycle.
OVERDUE_LIMIT_S = 2 * LEASE_S + 5


def node_loss_settings(home: Path, database_url: str, port: int, **overrides):
    from devkit.system import system_settings

    return system_settings(
        home, database_url, port, lease_seconds=LEASE_S, scheduler_max_in_flight=6,
        retry_backoff_base=0.2, retry_backoff_max=1, max_attempts=5,
        serve_min_replicas=2, serve_max_replicas=2, gateway_replicas=2,
        serve_resources={DEPTH_NODE: 1}, task_resources={WORK_NODE: 0.01},
        scheduler_resources={WORK_NODE: 0.01}, gateway_resources={GATEWAY_NODE: 1}, **overrides)


@dataclass
class Watch:
    """Polls /api/health and the leases in the background. Every poll must be answered; a
    lease may be past its expiry for at most OVERDUE_LIMIT_S."""

    client: httpx.Client
    db: object
    seen: list[tuple[float, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    max_overdue_s: float = 0.0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = self.client.get("/api/health", timeout=15)
                assert r.status_code in (200, 503), r.text[:300]
                self.seen.append((time.monotonic(), r.json()["status"]))
            except Exception as e:  # noqa: BLE001 - recorded; the scenario asserts on them
                self.errors.append(f"{time.monotonic():.1f} {e!r}"[:300])
            try:
                overdue = self.db.run(lambda c: c.execute(
                    "SELECT coalesce(extract(epoch FROM max(now() - lease_expires_at)), 0) "
                    "FROM queue_items WHERE status = 'processing'").fetchone())
                self.max_overdue_s = max(self.max_overdue_s, float(next(iter(overdue.values()))))
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"lease check: {e!r}"[:300])
            self._stop.wait(1.0)

    def statuses_since(self, t: float) -> list[str]:
        return [s for at, s in self.seen if at >= t]

    def wait_for(self, status: str, since: float, timeout: float) -> float:
        """Seconds from ``since`` to the first poll after it that saw ``status``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, s in list(self.seen):
                if at >= since and s == status:
                    return at - since
            time.sleep(0.2)
        raise AssertionError(f"health never said {status!r} in {timeout:.0f} s after the fault; "
                             f"it said {self.statuses_since(since)[-10:]}")

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class NodeLossRun:
    def __init__(self, args: argparse.Namespace) -> None:
        from cluster.runtime import free_port
        from db.connection import Database

        self.args = args
        self.items = args.items
        self.seeded = 0
        self.home = Path(args.home)
        self.settings = node_loss_settings(self.home, args.database_url, free_port())
        self.db = Database(args.database_url, max_size=2)
        self.cluster = None
        self.results: dict[str, dict] = {}

    # ------------------------------------------------------------------ the cluster and system

    def start_cluster(self) -> dict:
        from ray.cluster_utils import Cluster

        started = time.monotonic()
        for attempt in (1, 2):
            try:
                self.cluster = Cluster(initialize_head=True, head_node_args=HEAD_NODE_ARGS)
                for _ in range(2):
                    self.cluster.add_node(**WORKER_NODE_ARGS)
                break
            except Exception as e:  # noqa: BLE001
                # Ray gives a node 30 s to register (fixed): on a loaded machine, once more.
                print(f"starting the cluster failed ({e}); attempt {attempt}", file=sys.stderr)
                with contextlib.suppress(Exception):
                    self.cluster.shutdown()
                self.cluster = None
                _kill_processes_of(os.environ["RAY_TMPDIR"], but=os.getpid())
                if attempt == 2:
                    raise
        os.environ["RAY_ADDRESS"] = self.cluster.address
        ray_s = time.monotonic() - started
        self.up()
        return {"cluster_start_s": round(ray_s, 1),
                "depthmill_up_s": round(time.monotonic() - started - ray_s, 1)}

    def up(self) -> None:
        from cluster import runtime

        runtime.up(self.settings)
        self.client = httpx.Client(base_url=self.settings.api_url, timeout=60)

    def stop_cluster(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if self.cluster is not None:
            self.cluster.shutdown()
            self.cluster = None

    def worker_nodes(self) -> list:
        return sorted(self.cluster.worker_nodes, key=lambda n: n.node_id)

    def scheduler_node_id(self, timeout: float = 10) -> str:
        import ray

        from cluster.work.scheduler import get_scheduler

        return ray.get(get_scheduler().__ray_call__.remote(
            lambda self: ray.get_runtime_context().get_node_id()), timeout=timeout)

    def assert_placed_on_workers(self, scheduler_node: str) -> dict[str, int]:
        """The custom resources put the depth replicas, the processing tasks and the scheduler
        on the worker nodes, never on the head. How many of each were seen."""
        from devkit.system import pids_of

        workers = {n.node_id for n in self.worker_nodes()}
        assert scheduler_node in workers, "the scheduler runs on the head"
        seen = {}
        for what, title in (("depth_replicas", "ray::ServeReplica:depthmill:DepthModel"),
                            ("processing_tasks", "ray::process_item_task")):
            nodes = [n for n in map(self.node_of_pid, pids_of(title)) if n is not None]
            assert nodes, f"no {what} running"
            assert all(n.node_id in workers for n in nodes), f"{what} on the head"
            seen[what] = len(nodes)
        return seen

    def node_of_pid(self, pid: int):
        """The cluster node whose raylet started this worker process (all share one machine)."""
        raylets = {p.process.pid: node for node in [self.cluster.head_node, *self.worker_nodes()]
                   for p in node.all_processes.get("raylet", [])}
        try:
            parents = psutil.Process(pid).parents()
        except psutil.NoSuchProcess:  # a task that has just finished
            return None
        return next((raylets[p.pid] for p in parents if p.pid in raylets), None)

    # ---------------------------------------------------------------------------- the work

    def seed_batch(self) -> int:
        """``items`` new photos queued at once (the scheduler paused meanwhile, so the fault
        meets a full queue rather than a trickle); returns the total expected so far."""
        import ray

        from cluster.work.scheduler import get_scheduler
        from devkit.faults import seed

        scheduler = get_scheduler()
        ray.get(scheduler.pause.remote(), timeout=30)
        photos = self.home / f"photos-{self.seeded}"
        photos.mkdir(parents=True)
        seed(self.settings, self.db, photos, self.items, start=self.seeded)
        self.seeded += self.items
        ray.get(scheduler.resume.remote(), timeout=30)
        return self.seeded

    def wait_started(self, total: int) -> None:
        """Until the batch is under way: some done, most still to go."""
        from devkit.faults import wait_until

        wait_until(self.db, lambda c: c["completed"] >= total - self.items + min(5, self.items),
                   timeout=180)

    def assert_done(self, total: int, watch: Watch, scheduler_down_s: float = 0.0) -> dict:
        """The invariants. Expired leases are recovered by the scheduler: while it is down
        (``scheduler_down_s``, until Ray has restarted it) they wait for it."""
        from devkit.faults import assert_each_item_once

        assert_each_item_once(self.db, total)
        assert watch.max_overdue_s <= OVERDUE_LIMIT_S + scheduler_down_s, (
            f"an item stayed `processing` {watch.max_overdue_s:.1f} s past its lease")
        reclaimed = self.db.run(lambda c: c.execute(
            "SELECT count(*) AS n FROM queue_items WHERE attempts > 1").fetchone())["n"]
        return {"items": self.items, "max_lease_overdue_s": round(watch.max_overdue_s, 1),
                "claimed_more_than_once_total": reclaimed}

    def healthy_again(self, watch: Watch, since: float, timeout: float = 120) -> float:
        return round(watch.wait_for("healthy", since, timeout), 1)

    # --------------------------------------------------------------------------- scenarios

    def scenario_worker(self) -> dict:
        total = self.seed_batch()
        with Watch(self.client, self.db) as watch:
            self.wait_started(total)
            holds_scheduler = self.scheduler_node_id()
            placed = self.assert_placed_on_workers(holds_scheduler)
            victim = next(n for n in self.worker_nodes() if n.node_id != holds_scheduler)
            fault = time.monotonic()
            self.cluster.remove_node(victim, allow_graceful=False)
            degraded_after = watch.wait_for("degraded", fault, timeout=90)
            # Serve can place the lost depth replica again only on a node with its resources.
            time.sleep(3)
            added = time.monotonic()
            self.cluster.add_node(**WORKER_NODE_ARGS)
            figures = self.assert_done(total, watch)
            figures.update(
                placed_on_workers=placed,
                degraded_after_s=round(degraded_after, 1),
                healthy_after_node_added_s=self.healthy_again(watch, added),
                all_done_after_fault_s=round(time.monotonic() - fault, 1))
            assert not watch.errors, watch.errors[:5]
        return figures

    def scenario_scheduler(self) -> dict:
        import ray

        from cluster.work.scheduler import get_scheduler

        total = self.seed_batch()
        with Watch(self.client, self.db) as watch:
            self.wait_started(total)
            holds_scheduler = self.scheduler_node_id()
            victim = next(n for n in self.worker_nodes() if n.node_id == holds_scheduler)
            fault = time.monotonic()
            self.cluster.remove_node(victim, allow_graceful=False)
            deadline = time.monotonic() + 120
            while True:
                try:
                    moved_to = self.scheduler_node_id(timeout=5)
                    if moved_to != holds_scheduler:
                        break
                except Exception:  # noqa: BLE001 - restarting; asked again
                    pass
                assert time.monotonic() < deadline, "the scheduler was not restarted elsewhere"
                time.sleep(0.5)
            restarted_after = time.monotonic() - fault
            assert ray.get(get_scheduler().status.remote(), timeout=30)["running"] is True
            # No node is added back: the one worker left finishes the work (the scenarios
            # after this one need no second worker, and CI's time is short).
            figures = self.assert_done(total, watch, scheduler_down_s=restarted_after)
            figures.update(
                scheduler_restarted_after_s=round(restarted_after, 1),
                health_seen=sorted(set(watch.statuses_since(fault))),
                all_done_after_fault_s=round(time.monotonic() - fault, 1))
            assert not watch.errors, watch.errors[:5]
        return figures

    def scenario_gateway(self) -> dict:
        from cluster.storage import storage_from_settings
        from cluster.storage.sweep import sweep
        from devkit.system import pids_of

        title = "ray::ServeReplica:depthmill:Gateway"
        deadline = time.monotonic() + 120
        while len(pids := pids_of(title)) != 2:  # one may still be moving off the lost node
            assert time.monotonic() < deadline, f"expected 2 gateway replicas, found {pids}"
            time.sleep(0.5)
        time.sleep(2)  # and listening
        nodes = {getattr(self.node_of_pid(pid), "node_id", None) for pid in pids} - {None}
        uploads = [_noise_jpeg(i) for i in range(self.items)]
        outcomes: list[list[str]] = [[] for _ in uploads]
        started = threading.Event()

        def upload(i: int) -> None:
            for _ in range(20):
                started.set()
                try:
                    r = self.client.post("/api/media/upload",
                                         files={"files": (f"u{i}.jpg", uploads[i], "image/jpeg")})
                except httpx.TransportError as e:
                    outcomes[i].append(type(e).__name__)  # the connection died: retry
                else:
                    outcomes[i].append(str(r.status_code))
                    if r.status_code == 200:
                        return
                    # Anything but a 5xx (or 429) would not be worth retrying: a wrong answer.
                    assert r.status_code >= 500 or r.status_code == 429, r.text[:300]
                time.sleep(0.5)

        before = self.db.run(lambda c: c.execute("SELECT count(*) AS n FROM media_items").fetchone())["n"]
        with Watch(self.client, self.db) as watch, ThreadPoolExecutor(8) as pool:
            done = [pool.submit(upload, i) for i in range(len(uploads))]
            started.wait(30)
            time.sleep(0.3)  # uploads under way on both replicas
            fault = time.monotonic()
            os.kill(pids[0], 9)
            for f in done:
                f.result()
            served_after = _first_answer_after(self.client)
            deadline = time.monotonic() + 120
            while len(pids_of(title)) < 2:  # Serve replaces the replica
                assert time.monotonic() < deadline, "the gateway replica was not replaced"
                time.sleep(0.5)
            replaced_after = time.monotonic() - fault
            self.seeded += len(uploads)
            figures = self.assert_done(self.seeded, watch)
            assert not [e for e in watch.errors if "lease check" in e], watch.errors[:5]
        assert all(o and o[-1] == "200" for o in outcomes), outcomes
        retried = [o[:-1] for o in outcomes if len(o) > 1]
        media_rows = self.db.run(lambda c: c.execute(
            "SELECT storage_key, sha256 FROM media_items").fetchall())
        assert len(media_rows) == before + len(uploads), (len(media_rows), before, len(uploads))
        storage = storage_from_settings(self.settings)
        missing = [m["storage_key"] for m in media_rows if not storage.exists(m["storage_key"])]
        assert not missing, f"media rows without their original: {missing[:5]}"
        orphans = sweep(self.db, storage, older_than_s=0, dry_run=True).orphans
        assert not orphans, f"stored objects no row points to: {orphans[:5]}"
        figures.update(
            gateway_nodes=len(nodes), uploads=len(uploads),
            uploads_retried=len(retried), retry_answers=sorted({a for o in retried for a in o}),
            health_errors_while_down=len(watch.errors),
            served_after_kill_s=round(served_after - fault, 2),
            replica_replaced_after_s=round(replaced_after, 1))
        return figures

    def scenario_restart(self) -> dict:
        from devkit.faults import counts

        total = self.seed_batch()
        self.wait_started(total)
        before = counts(self.db)
        fault = time.monotonic()
        self.client.close()
        self.stop_cluster()
        figures = self.start_cluster()
        with Watch(self.client, self.db) as watch:
            figures.update(self.assert_done(total, watch))
            figures.update(
                unfinished_at_stop=total - before["completed"],
                processing_at_stop=before["processing"],
                all_done_after_stop_s=round(time.monotonic() - fault, 1),
                healthy_after_stop_s=self.healthy_again(watch, fault))
            assert not watch.errors, watch.errors[:5]
        return figures

    def run(self, scenarios: list[str]) -> dict:
        from cluster.media import configure_pillow
        from cluster.runtime import use_node_env

        use_node_env()
        configure_pillow()
        self.db.open()
        try:
            self.results["start"] = self.start_cluster()
            for name in scenarios:
                began = time.monotonic()
                try:
                    figures = getattr(self, f"scenario_{name}")()
                    self.results[name] = {"ok": True, **figures}
                except Exception as e:  # noqa: BLE001 - reported per scenario; the next one runs
                    self.results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:3000],
                                          "traceback": traceback.format_exc()[-3000:]}
                self.results[name]["seconds"] = round(time.monotonic() - began, 1)
                self._write()
        finally:
            from cluster import runtime

            try:
                runtime.down(self.settings)
            except Exception as e:  # noqa: BLE001 - the cluster is stopped below either way
                print(f"depthmill down: {e!r}", file=sys.stderr)
            self.stop_cluster()
            self.db.close()
        return self.results

    def _write(self) -> None:
        Path(self.args.json).write_text(json.dumps(self.results, indent=2))


def _noise_jpeg(i: int) -> bytes:
    """A photo of its own content (~150 KB), so each upload takes a moment on the wire."""
    pixels = np.random.default_rng(10_000 + i).integers(0, 256, (360, 480, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _first_answer_after(client: httpx.Client, timeout: float = 60) -> float:
    """When a new request first got an answer (the port served by the remaining replica)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get("/api/queue/status", timeout=10).status_code == 200:
                return time.monotonic()
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("no request was served after the gateway replica was killed")


def run_in_own_process(database_url: str, home: Path, *, items: int, timeout: float,
                       scenarios: tuple[str, ...] = SCENARIOS) -> dict:
    """This module's run in a child process with a Ray of its own; its results, with the tail
    of its output under ``"log"``. Whatever of its Ray is left when it ends (or is killed at
    ``timeout``) is killed."""
    import shutil
    import signal
    import subprocess
    import tempfile

    home.mkdir(parents=True, exist_ok=True)
    out, log = home / "node_loss.json", home / "node_loss.log"
    # Short: Ray's unix sockets live under it, and their paths are limited to ~100 bytes.
    ray_tmp = tempfile.mkdtemp(prefix="dmnl-", dir="/tmp")
    # Nothing of the caller's Ray: above all no RAY_ADDRESS, which would join its cluster.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_TMPDIR=ray_tmp, PYTHONPATH=os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")) if p))
    command = [sys.executable, "-m", "devkit.node_loss", "--database-url", database_url,
               "--home", str(home), "--json", str(out), "--items", str(items),
               "--scenarios", ",".join(scenarios)]
    with log.open("wb") as sink:
        child = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        finally:
            _kill_processes_of(ray_tmp)
            shutil.rmtree(ray_tmp, ignore_errors=True)  # its sessions' logs and sockets
    results = json.loads(out.read_text()) if out.exists() else {}
    results["returncode"] = child.returncode
    results["log"] = log.read_text(errors="replace")[-6000:]
    return results


def _kill_processes_of(ray_tmp: str, but: int | None = None) -> None:
    """Every process of that run: each inherited its RAY_TMPDIR (Ray's workers rename
    themselves, so their command lines do not say)."""
    for p in psutil.process_iter():
        try:
            if p.pid != but and p.environ().get("RAY_TMPDIR") == ray_tmp:
                p.kill()
        except psutil.Error:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    results = NodeLossRun(args).run(scenarios)
    return 0 if all(results.get(s, {}).get("ok") for s in scenarios) else 1


if __name__ == "__main__":
    sys.exit(main())
