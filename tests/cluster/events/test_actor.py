"""The deliverer as the named, detached Ray actor: killed mid-delivery, it loses nothing (Ray
restarts it and the delivery is sent again once its lease expires, with the same webhook-id)."""

from __future__ import annotations

import time

import pytest
import ray

from cluster.config.settings import Settings
from cluster.events import signing
from cluster.events.delivery import get_deliverer, get_or_start_deliverer
from db import events, webhooks
from devkit.webhook_receiver import Receiver

pytestmark = pytest.mark.slow


def wait_for(check, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def test_killed_mid_delivery_loses_nothing(ray_cluster, db, database_url, tmp_path):
    calls = {"n": 0}

    def answer(r):
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(4)  # the deliverer is killed while it waits for this one
        return 200, {}, b"ok"

    settings = Settings(home=tmp_path, database_url=database_url, webhook_allow_private=True,
                        webhook_retry_schedule_s=[0, 0.2, 0.2], webhook_poll_s=0.2,
                        webhook_lease_s=1.5, webhook_timeout_s=10)
    with Receiver(answer=answer) as rx:
        secret = signing.new_secret()
        hook = db.run(webhooks.create, rx.url, ["item.completed"], secret)
        actor = get_or_start_deliverer(settings)
        try:
            assert ray.get(actor.status.remote(), timeout=30)["running"]
            event_id = db.run(events.emit, "item.completed", {"n": 1})
            wait_for(lambda: len(rx.received) == 1)
            ray.kill(actor, no_restart=False)  # kill -9; Ray restarts it (max_restarts=-1)
            wait_for(lambda: db.run(webhooks.list_deliveries, hook.id).items[0].status
                     == "delivered")
            assert rx.ids() == [f"evt_{event_id}"] * len(rx.received) and len(rx.received) >= 2
            assert all(g["data"] == {"n": 1} for g in rx.verified(secret))
            (d,) = db.run(webhooks.list_deliveries, hook.id).items
            assert d.attempts == 2
            assert get_deliverer() is not None
        finally:
            ray.kill(get_deliverer() or actor, no_restart=True)
