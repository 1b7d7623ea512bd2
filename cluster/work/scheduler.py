"""The scheduler: a named, detached, async Ray actor that keeps the cluster busy.

It claims batches sized to its free slots (one statement, ``FOR UPDATE SKIP LOCKED``), runs each
item as a Ray task, heartbeats the leases of what is in flight, records outcomes in batches, wakes
on ``NOTIFY`` with polling as the fallback, and recovers expired leases. When the depth deployment
or the object store is down it stops claiming (instead of burning attempts) and resumes by itself.

All state that matters lives in Postgres: a restarted scheduler (Ray restarts it) simply recovers
expired leases and carries on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import ray
from ray.util import metrics

from cluster.storage import keys as storage_keys
from cluster.config.worker_env import FOREGROUND_RUNTIME_ENV
from cluster.work import outcomes as decide
from cluster.work.outcomes import Dependency, SortedOutcomes
from cluster.work.processing import Outcome
from cluster.config.models import served_models
from cluster.config.settings import Settings
from cluster.storage import Storage, storage_from_settings
from cluster.config.names import APP_NAME, DEPTH_DEPLOYMENT, NAMESPACE, SCHEDULER_ACTOR
from cluster.work.tasks import process_item_task
from db import depth as depth_maps
from db import media, queue
from db.connection import Database
from db.listen import wake_on_notify
from db.queue import NOTIFY_CHANNEL, ClaimedItem, Lease

log = logging.getLogger(__name__)


@dataclass
class InFlight:
    item: ClaimedItem
    ref: ray.ObjectRef
    started: float


class Scheduler:
    def __init__(self, settings: Settings, app_name: str = APP_NAME) -> None:
        self.settings = settings
        self.models = served_models(settings)  # one scheduler claims for every served model
        self.app_name = app_name
        self.owner = f"scheduler-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.db = Database(settings.database_url, max_size=4, name="scheduler").open()
        self.max_in_flight = settings.scheduler_max_in_flight
        self.in_flight: dict[uuid.UUID, InFlight] = {}
        self.finished: list[Outcome] = []
        self.paused = False
        self.deps = {"depth": Dependency(), "storage": Dependency()}
        self._storage: Storage | None = None
        self.give_backs = decide.GiveBacks()
        self.last_error: str | None = None
        self.counts = {"claimed": 0, "completed": 0, "failed": 0, "retried": 0, "given_back": 0,
                       "discarded": 0}
        # Seconds per stage summed over the photos completed (their Outcome.stages) and the
        # scheduler's own share of recording them: where an item's time goes (bench.e2e_bench).
        self.stage_seconds: dict[str, float] = {}
        self.staged_photos = 0
        self.wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        # The tasks awaiting items in flight: the event loop holds tasks only weakly, so one no
        # one references can be garbage-collected mid-flight and its outcome never recorded.
        self._item_tasks: set[asyncio.Task] = set()
        self._started = False
        self._metrics()
        # As a Ray async actor this runs on the actor's event loop: start right away, so that an
        # actor Ray restarts after a crash (max_restarts) goes back to work without being asked.
        try:
            asyncio.get_running_loop().create_task(self.start())
        except RuntimeError:
            pass  # constructed outside an event loop (a plain object): start() is called later

    def _metrics(self) -> None:
        self.m_done = metrics.Counter(
            "depthmill_items_total", "Items finished, by kind and outcome.", ("kind", "outcome"))
        self.m_latency = metrics.Histogram(
            "depthmill_processing_seconds", "Time to process one item.",
            boundaries=[0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300], tag_keys=("kind",))
        self.m_claim = metrics.Histogram(
            "depthmill_claim_batch_size", "Items per claim.", boundaries=[1, 2, 4, 8, 16, 32, 64, 128])
        self.m_queue = metrics.Gauge("depthmill_queue_items", "Queue items by status.", ("status",))

    # --------------------------------------------------------------------------- control API

    async def start(self) -> dict:
        self.paused = False
        if not self._started:
            self._started = True  # before the first await: two start() calls must not race
            recovered = await asyncio.to_thread(self.db.run, queue.recover_expired_leases)
            if recovered:
                log.warning("recovered %d expired leases at start", len(recovered))
            for loop in (self._claim_loop, self._heartbeat_loop,
                         self._recovery_loop, self._listen_loop, self._stats_loop):
                self._tasks.append(asyncio.create_task(loop()))
        self.wake.set()
        return await self.status()

    async def pause(self) -> dict:
        self.paused = True
        return await self.status()

    async def resume(self) -> dict:
        self.paused = False
        self.wake.set()
        return await self.status()

    async def status(self) -> dict[str, Any]:
        await self.start_if_needed()
        return {
            "running": self._started and not self.paused,
            "paused": self.paused,
            "owner": self.owner,
            "in_flight": len(self.in_flight),
            "max_in_flight": self.max_in_flight,
            "depth_available": self.deps["depth"].ok,
            "depth_error": self.deps["depth"].error,
            "storage_available": self.deps["storage"].ok,
            "storage_error": self.deps["storage"].error,
            "last_error": self.last_error,
            "counts": dict(self.counts),
            "stages": {"photos": self.staged_photos, "seconds": dict(self.stage_seconds)},
            "model": self.settings.model,
            "models": list(self.models),
        }

    async def start_if_needed(self) -> None:
        if not self._started and not self.paused:
            await self.start()

    async def shutdown(self) -> None:
        """Stop claiming, give back what never started, let the rest expire back if needed."""
        self.paused = True
        tasks, self._tasks = self._tasks, []
        # Cancelled until they end: on Python 3.11 a wait_for loses a cancel that lands as its
        # wait ends, and the loop would go on beside the next start()'s.
        while pending := [t for t in tasks if not t.done()]:
            for t in pending:
                t.cancel()
            await asyncio.wait(pending, timeout=0.5)
        self._started = False

    # ----------------------------------------------------------------------------- the loops

    async def _claim_loop(self) -> None:
        while True:
            try:
                items, wanted = await self._record_and_claim()
                if items:
                    self.m_claim.observe(len(items))
                    self.counts["claimed"] += len(items)
                for item in items:
                    self._dispatch(item)
                self.last_error = None
                if wanted and len(items) == wanted:
                    continue  # more may be waiting: claim again once slots free up
            except Exception as e:  # the loop must survive a database outage
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("scheduler loop: %s", self.last_error)
            try:
                await asyncio.wait_for(self.wake.wait(), self.settings.scheduler_poll_s)
            except TimeoutError:
                pass
            self.wake.clear()

    def _dispatch(self, item: ClaimedItem) -> None:
        ref = process_item_task.options(resources=dict(self.settings.task_resources)).remote(
            item, self.settings, self.app_name)
        self.in_flight[item.id] = InFlight(item, ref, time.monotonic())
        task = asyncio.create_task(self._await_item(item, ref))
        self._item_tasks.add(task)
        task.add_done_callback(self._item_tasks.discard)

    async def _await_item(self, item: ClaimedItem, ref: ray.ObjectRef) -> None:
        try:
            outcome: Outcome = await ref
        except ray.exceptions.TaskCancelledError:
            outcome = Outcome.of(item, "failed", error="cancelled while processing")
        except Exception as e:  # Ray gave up: the worker died more often than max_retries
            outcome = Outcome.of(item, "retry", error=f"task failed: {e}"[:2000])
        self.finished.append(outcome)
        self.wake.set()

    async def _record_and_claim(self) -> tuple[list[ClaimedItem], int]:
        """Record what finished and claim for the slots that frees (and any others free), the
        completions and the claim in one transaction (``queue.complete_and_claim``): one commit
        per cycle rather than two (a commit's WAL flush was about 40% of the claimers' time in the
        server in queue_bench). Returns the claimed items and how many were wanted."""
        batch, self.finished = self.finished, []
        try:
            outcomes = self._sort_outcomes(batch)
            await self._check_dependencies()  # after the sort, which marks services down
            free = decide.free_slots(self.max_in_flight, len(self.in_flight), len(batch))
            wanted = decide.wanted(free, paused=self.paused, deps=self.deps)
            recording = time.perf_counter()
            items = await asyncio.to_thread(self._record, outcomes, wanted)
            recorded = time.perf_counter() - recording
        except Exception:
            self.finished = batch + self.finished  # keep them; the next pass tries again
            raise
        self._add_stages(batch, recorded)
        finished_models = set()
        for outcome in batch:
            flight = self.in_flight.pop(outcome.lease.item_id, None)
            if flight is not None:
                finished_models.add(flight.item.model_id)
        # A model whose last item in flight finished, with nothing of it claimed now.
        busy = {f.item.model_id for f in self.in_flight.values()} | {i.model_id for i in items}
        for model in sorted(finished_models - busy):
            await self._report_if_drained(model)
        return items, wanted

    def _add_stages(self, batch: list[Outcome], recorded: float) -> None:
        photos = [o for o in batch if o.status == "completed" and o.stages]
        for o in photos:
            for stage, seconds in o.stages.items():
                self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
        if photos:
            # The cycle's statement serves every outcome in it (and the claim); the photos' share.
            share = recorded * len(photos) / len(batch)
            self.stage_seconds["record"] = self.stage_seconds.get("record", 0.0) + share
        self.staged_photos += len(photos)

    async def _report_if_drained(self, model: str) -> None:
        """The last item in flight of ``model`` finished and nothing of it was claimed: if the
        queue holds nothing more for it, say so (queue.drained). Never raised: it only
        reports."""
        try:
            await asyncio.to_thread(self.db.run, queue.report_if_drained, model)
        except Exception as e:  # noqa: BLE001 - the outcomes are recorded; the next cycle goes on
            log.warning("could not report the queue drained: %s", e)

    def _sort_outcomes(self, batch: list[Outcome]) -> SortedOutcomes:
        """What each outcome asks of the queue (``outcomes.sort_outcomes``)."""
        return decide.sort_outcomes(batch, self.deps, self.give_backs)

    def _record(self, outcomes: SortedOutcomes, wanted: int) -> list[ClaimedItem]:
        """Give-backs and failures (rare) first, each its own transaction; the completions and
        the claim last and together, so a failure here never strands claimed items."""
        lost: list[Outcome] = []  # the lease was no longer ours: nothing was recorded
        if given_back := outcomes.given_back:
            self.db.run(queue.give_back, [o.lease for o in given_back], given_back[0].error)
            self.counts["given_back"] += len(given_back)
        for o in outcomes.failed:
            result = self.db.run(
                queue.fail, o.lease, o.error or "unknown error", retryable=o.status == "retry",
                backoff_base=self.settings.retry_backoff_base,
                backoff_max=self.settings.retry_backoff_max,
            )
            if result is None:
                lost.append(o)
                continue
            key = "retried" if result.status == "queued" else "failed"
            self.counts[key] += 1
            self.m_done.inc(tags={"kind": o.kind, "outcome": key})
        done, items = set(), []
        if outcomes.completed or wanted:
            done, items = self.db.run(self._complete_and_claim, outcomes.completed, wanted)
        self.counts["completed"] += len(done)
        for o in outcomes.completed:
            if o.lease.item_id not in done:
                lost.append(o)
                continue
            self.m_done.inc(tags={"kind": o.kind, "outcome": "completed"})
            self.m_latency.observe(o.seconds, tags={"kind": o.kind})
        if lost:
            self._discard_outputs_of_deleted_media(lost)
        return items

    def _complete_and_claim(
        self, conn: psycopg.Connection, completed: list[Outcome], wanted: int
    ) -> tuple[set[uuid.UUID], list[ClaimedItem]]:
        """Only items whose lease still held get their depth map rows (a zombie's outputs were
        written to the same keys, so nothing is duplicated)."""
        outputs = {o.lease.item_id: [{"format": m.format, "width": m.width, "height": m.height}
                                     for m in o.outputs] for o in completed}
        done, items = queue.complete_and_claim(
            conn, [o.lease for o in completed], wanted, self.owner, self.settings.lease_seconds,
            model_id=self.models, outputs=outputs)
        depth_maps.upsert_many(conn, [m for o in completed if o.lease.item_id in done for m in o.outputs])
        return done, items

    def _discard_outputs_of_deleted_media(self, lost: list[Outcome]) -> None:
        """An item whose media was deleted while it ran went on writing renditions and depth
        maps after the delete removed what it knew of; no row points to them: remove them.
        An item lost to an expired lease is left alone: its new owner writes the same keys."""
        # Never raised: the outcomes are recorded by now, and _record_and_claim would record
        # them again.
        try:
            gone = self.db.run(media.missing, {o.media_id for o in lost})
            storage = self._storage_client()
            for media_id in gone:
                for model in self.models:  # the outcome does not say whose; deleting is cheap
                    for key in storage_keys.written_by_processing(media_id, model):
                        storage.delete(key)
        except Exception as e:  # database or store down: these objects stay behind, no more
            log.warning("could not remove the outputs of deleted media: %s", e)
            return
        self.counts["discarded"] += len(gone)

    async def _check_dependencies(self) -> None:
        """Are the depth deployment and the object store there to take work? Checked every few
        seconds while healthy, and before each claim while not."""
        probes = {"depth": self._probe_depth, "storage": self._probe_storage}
        for name in decide.due_dependencies(self.deps, time.monotonic()):
            dep = self.deps[name]
            try:
                await probes[name]()
                if not dep.ok:
                    log.info("%s available; claiming", name)
                dep.up()
            except Exception as e:
                dep.down(f"{name} unavailable: {type(e).__name__}: {e}")

    async def _probe_depth(self) -> None:
        from ray import serve

        handle = serve.get_deployment_handle(DEPTH_DEPLOYMENT, app_name=self.app_name)
        await asyncio.wait_for(handle.info.remote(), timeout=10)

    def _storage_client(self) -> Storage:
        if self._storage is None:  # built lazily: S3 may be down when the scheduler starts
            self._storage = storage_from_settings(self.settings)
        return self._storage

    async def _probe_storage(self) -> None:
        await asyncio.wait_for(
            asyncio.to_thread(lambda: self._storage_client().check()), timeout=30)

    async def _heartbeat_loop(self) -> None:
        interval = max(self.settings.lease_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            leases: list[Lease] = [f.item.lease for f in self.in_flight.values()]
            if not leases:
                continue
            try:
                report = await asyncio.to_thread(
                    self.db.run, queue.extend_leases, leases, self.settings.lease_seconds
                )
            except Exception as e:
                self.last_error = f"heartbeat: {type(e).__name__}: {e}"
                continue
            for item_id in [*report.cancelled, *report.lost]:
                flight = self.in_flight.get(item_id)
                if flight is not None:
                    ray.cancel(flight.ref, force=False)
            for item_id in report.lost:
                # Someone else owns it now (our lease expired); our result will be fenced off.
                self.in_flight.pop(item_id, None)

    async def _recovery_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_seconds)
            try:
                recovered = await asyncio.to_thread(self.db.run, queue.recover_expired_leases)
                if recovered:
                    log.warning("recovered %d expired leases", len(recovered))
                    self.wake.set()
            except Exception as e:
                self.last_error = f"recovery: {type(e).__name__}: {e}"

    async def _listen_loop(self) -> None:
        await wake_on_notify(self.settings.database_url, NOTIFY_CHANNEL, self.wake)

    async def _stats_loop(self) -> None:
        while True:
            try:
                stats = await asyncio.to_thread(self.db.run, queue.stats)
                for status, n in stats.status_counts().items():
                    self.m_queue.set(n, tags={"status": status})
            except Exception:
                pass  # the claim loop reports database trouble
            await asyncio.sleep(15)


SchedulerActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1,
                            runtime_env=FOREGROUND_RUNTIME_ENV)(Scheduler)


def get_or_start_scheduler(settings: Settings, app_name: str = APP_NAME):
    """The cluster's one scheduler (named, detached): created if missing, then started."""
    handle = SchedulerActor.options(
        name=SCHEDULER_ACTOR, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        resources=dict(settings.scheduler_resources),
    ).remote(settings, app_name)
    ray.get(handle.start.remote())
    return handle


def get_scheduler():
    """The running scheduler's handle, or None."""
    try:
        return ray.get_actor(SCHEDULER_ACTOR, namespace=NAMESPACE)
    except ValueError:
        return None
