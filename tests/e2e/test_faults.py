"""Faults with items in flight on the tiny model: kill -9 of a Ray worker, of the scheduler and of
the depth replica, a Postgres restart and an S3 outage. After each, every item reaches a terminal
state, none is lost, none has two results (one depth map per media + model + format), nothing
stays `processing`, and the API keeps answering throughout."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import ray

from cluster.work.scheduler import get_scheduler
from db.connection import Database
from db.migrate import migrate
from devkit.postgres import restart_embedded
from devkit.s3 import MotoS3Server
from devkit.faults import HealthWatch, assert_each_item_once, seed, wait_until
from devkit.system import pids_of, running_system, system_settings

pytestmark = pytest.mark.slow

# 60 items accepted and unfinished when the fault lands (6 of them leased at a time): every
# fault meets items queued, leased and being written at once, and the five tests fit the CI
# budget on two cores.
ITEMS = 60


@contextmanager
def loaded_system(serve_port: int, database_url: str, tmp_path: Path, **overrides) -> Iterator:
    """The whole system with ITEMS photos queued; yields once a few have completed."""
    settings = system_settings(
        tmp_path / "home", database_url, serve_port, lease_seconds=4, scheduler_max_in_flight=6,
        retry_backoff_base=0.2, retry_backoff_max=1, **overrides)
    with Database(database_url, max_size=2) as db:
        seed(settings, db, tmp_path, ITEMS)
        with running_system(settings) as client:
            wait_until(db, lambda c: c["completed"] >= 5, timeout=120)
            yield client, db


def kill_first(title: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while not (pids := pids_of(title)):
        assert time.monotonic() < deadline, f"no process titled {title!r}"
        time.sleep(0.05)
    os.kill(pids[0], signal.SIGKILL)
    return pids[0]


def test_kill_9_of_a_worker_mid_item(ray_cluster, serve_port, database_url, tmp_path):
    with loaded_system(serve_port, database_url, tmp_path) as (client, db), HealthWatch(client) as watch:
        kill_first("ray::process_item_task")  # Ray re-runs the task (max_retries)
        time.sleep(1)
        kill_first("ray::process_item_task")
        assert_each_item_once(db, ITEMS)
    assert not watch.errors and watch.seen


def test_kill_9_of_the_scheduler_mid_run(ray_cluster, serve_port, database_url, tmp_path):
    with loaded_system(serve_port, database_url, tmp_path) as (client, db), HealthWatch(client) as watch:
        # Ray restarts it (max_restarts); it starts itself and recovers the expired leases.
        pid = ray.get(get_scheduler().__ray_call__.remote(lambda self: os.getpid()))
        os.kill(pid, signal.SIGKILL)
        assert_each_item_once(db, ITEMS)
        assert ray.get(get_scheduler().status.remote())["running"] is True
    assert not watch.errors and watch.seen


def test_kill_9_of_the_depth_replica(ray_cluster, serve_port, database_url, tmp_path):
    with loaded_system(serve_port, database_url, tmp_path) as (client, db), HealthWatch(client) as watch:
        # Serve replaces the replica; the scheduler gives back what it could not run and waits.
        kill_first("ray::ServeReplica:depthmill:DepthModel")
        assert_each_item_once(db, ITEMS)
    assert not watch.errors and watch.seen


@pytest.fixture
def own_postgres(tmp_path):
    """A Postgres of this test's own, so it can be restarted without touching the others."""
    from db.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path / "pg")
    migrate(server.url)
    yield server
    server.stop()


def test_postgres_restart_mid_run(ray_cluster, serve_port, own_postgres, tmp_path):
    with loaded_system(serve_port, own_postgres.url, tmp_path) as (client, db), HealthWatch(client) as watch:
        # Down longer than a lease: leases expire and are recovered; fencing and the unique
        # depth row keep a result from being recorded twice.
        restart_embedded(own_postgres, down_s=6,
                         while_down=lambda: _assert_health(client, "unhealthy", 503))
        assert_each_item_once(db, ITEMS)
        _assert_health(client, "healthy", 200, timeout=30)
    # The check while down saw `unhealthy`; the 1 s poller may straddle a 6 s outage with one
    # slow answer, so it is held to answering every poll.
    assert not watch.errors and watch.seen


def test_s3_outage_mid_run(ray_cluster, serve_port, database_url, tmp_path):
    s3 = MotoS3Server()
    s3.start()
    try:
        with loaded_system(serve_port, database_url, tmp_path, storage="s3", s3_endpoint=s3.endpoint,
                           s3_bucket="faults") as (client, db), HealthWatch(client) as watch:
            s3.stop()
            _assert_health(client, "degraded", 200)
            time.sleep(6)
            s3.start()
            # Items met the outage were given back, not failed: all complete once S3 is back.
            assert_each_item_once(db, ITEMS)
            _assert_health(client, "healthy", 200, timeout=30)
    finally:
        s3.stop()
    assert not watch.errors and "degraded" in watch.seen


def _assert_health(client, expected: str, code: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (r := client.get("/api/health", timeout=15)).json()["status"] != expected:
        assert time.monotonic() < deadline, r.json()
        time.sleep(0.5)
    assert r.status_code == code
