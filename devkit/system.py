"""The whole system on the session's Ray cluster: gateway + depth deployment (tiny) + scheduler
+ webhook deliverer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psutil
import ray
from ray import serve

from cluster.events.delivery import get_deliverer, get_or_start_deliverer
from cluster.work.scheduler import get_or_start_scheduler, get_scheduler
from cluster.config.settings import Settings
from cluster.config.names import APP_NAME
from serve_app.app import build_depthmill_app


def system_settings(home, database_url: str, port: int, **overrides) -> Settings:
    """Small, fast settings: fractional CPUs so everything fits on 2 cores."""
    base = dict(home=home, database_url=database_url, model="tiny", port=port,
                serve_num_cpus=0.25, serve_max_batch_size=8, serve_batch_wait_s=0.05,
                lease_seconds=10, scheduler_poll_s=0.5, db_pool_size=4)
    return Settings(**{**base, **overrides})


@contextmanager
def running_system(settings: Settings) -> Iterator[httpx.Client]:
    """Deploys the app, starts the scheduler and the webhook deliverer; yields a client on the HTTP port; tears down."""
    serve.run(build_depthmill_app(settings), name=APP_NAME, route_prefix="/")
    get_or_start_scheduler(settings)
    get_or_start_deliverer(settings)
    try:
        headers = {"Authorization": f"Bearer {settings.api_keys[0]}"} if settings.api_keys else {}
        with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=60,
                          headers=headers) as client:
            yield client
    finally:
        scheduler = get_scheduler()
        if scheduler is not None:
            ray.kill(scheduler, no_restart=True)
        deliverer = get_deliverer()
        if deliverer is not None:
            ray.kill(deliverer, no_restart=True)
        serve.delete(APP_NAME)


def pids_of(title: str) -> list[int]:
    """Ray names its worker processes after what they run (``ray::process_item_task``)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd and cmd[0].startswith(title):
            found.append(p.pid)
    return found
