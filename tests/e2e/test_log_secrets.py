"""No API key, database password or URL-signing secret appears in any log: the Ray session's
logs (driver, raylet, workers, Serve controller, proxy and replicas) and this process's."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import ray
from psycopg.conninfo import make_conninfo

from devkit import media_files
from devkit.system import running_system, system_settings

pytestmark = pytest.mark.slow

API_KEY = "apikey-7f3c9a1e5b2d4c6f"
PASSWORD = "dbpass-2b8e6d4f1a3c5e7b"  # trust auth in tests: accepted and ignored by the server
SIGNING = "signing-9d1f3b5a7c2e4d6f8a0b"


def test_secrets_never_reach_the_logs(serve_port, database_url, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    settings = system_settings(tmp_path / "home", make_conninfo(database_url, password=PASSWORD),
                               serve_port, api_keys=API_KEY, signing_secret=SIGNING)
    with running_system(settings) as client:
        client.get("/api/media", headers={"Authorization": "Bearer not-the-key"})  # a 401
        photo = media_files.jpeg_bytes(media_files.photo("coffee"))
        media_id = client.post("/api/media/upload", files=[("files", ("a.jpg", photo))]).json()[
            "results"][0]["media_id"]
        deadline = time.monotonic() + 90
        while client.get(f"/api/media/{media_id}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        depth_url = client.get(f"/api/media/{media_id}").json()["urls"]["depth"]
        assert client.get(depth_url).status_code == 200
        client.get("/api/health")
    time.sleep(2)  # let Ray flush worker logs to disk

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    files = [p for p in logs.rglob("*") if p.is_file()]
    assert len(files) > 10  # the scan saw the cluster's logs, not an empty directory
    for path in files:
        text = path.read_bytes()
        for secret in (API_KEY, PASSWORD, SIGNING):
            assert secret.encode() not in text, f"{secret!r} found in {path}"
    for secret in (API_KEY, PASSWORD, SIGNING):
        assert secret not in caplog.text
