"""The whole system with webhooks: an endpoint added through the API gets the item.completed of
an upload, signed (verified by standardwebhooks), from the deliverer actor `running_system`
starts; its secret appears in no Ray log."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import ray

from devkit import media_files
from devkit.system import running_system, system_settings
from devkit.webhook_receiver import Receiver

pytestmark = pytest.mark.slow


def test_an_upload_reaches_a_webhook(serve_port, database_url, tmp_path):
    settings = system_settings(tmp_path / "home", database_url, serve_port,
                               webhook_allow_private=True, webhook_poll_s=0.5,
                               webhook_retry_schedule_s=[0, 0.5, 0.5, 0.5])
    with Receiver() as rx, running_system(settings) as client:
        created = client.post("/api/webhooks", json={"url": rx.url, "events": ["item.completed"]})
        assert created.status_code == 201, created.text
        secret, hook_id = created.json()["secret"], created.json()["id"]
        photo = media_files.jpeg_bytes(media_files.photo("coffee"))
        media_id = client.post("/api/media/upload", files=[("files", ("a.jpg", photo))]).json()[
            "results"][0]["media_id"]
        deadline = time.monotonic() + 90
        while not rx.received:
            assert time.monotonic() < deadline, "no webhook arrived"
            time.sleep(0.3)
        (got,) = rx.verified(secret)
        assert got["type"] == "item.completed" and got["data"]["media_id"] == media_id
        assert got["data"]["outputs"]
        deliveries = client.get(f"/api/webhooks/{hook_id}/deliveries").json()["items"]
        while deliveries[0]["status"] != "delivered":
            assert time.monotonic() < deadline
            time.sleep(0.3)
            deliveries = client.get(f"/api/webhooks/{hook_id}/deliveries").json()["items"]
        assert deliveries[0]["response_status"] == 200
    time.sleep(1)  # let Ray flush worker logs to disk
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    for path in (p for p in logs.rglob("*") if p.is_file()):
        assert secret[6:].encode() not in path.read_bytes(), f"the secret is in {path}"
