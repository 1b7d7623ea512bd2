"""`depthmill reprocess` submits through the Ray Jobs SDK to a real `ray start --head`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cluster.cli import main
from cluster.runtime import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_head(tmp_path):
    """A second, real Ray head with a dashboard, for the Jobs API. `ray start --block` stops
    exactly the processes it started when terminated (`ray stop` would kill every cluster on the
    machine, the session's too)."""
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    dashboard = free_port()
    # Jobs run `python` from the head's PATH: this test's interpreter, as on a real node where
    # the project is installed into the python on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": path}
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--port", str(free_port()),
         "--dashboard-port", str(dashboard), "--dashboard-host", "127.0.0.1", "--num-cpus", "2",
         # Its own agent ports: the session's cluster on this machine holds the defaults.
         "--dashboard-agent-listen-port", str(free_port()),
         "--dashboard-agent-grpc-port", str(free_port()),
         "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
         "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2)
            break
        except OSError:
            assert head.poll() is None, "ray start --head exited"
            assert time.monotonic() < deadline, "the Ray dashboard did not come up"
            time.sleep(1)
    yield url
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(60)
    except subprocess.TimeoutExpired:
        head.kill()


def test_reprocess_dry_run_through_the_jobs_api(ray_head, database_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEPTHMILL_DATABASE_URL", database_url)
    monkeypatch.setenv("DEPTHMILL_HOME", str(tmp_path))
    monkeypatch.setenv("DEPTHMILL_MODEL", "tiny")
    code = main(["reprocess", "--address", ray_head, "--dry-run", "--kind", "photo"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert '"dry_run": true' in out and '"selected": {}' in out
    assert "SUCCEEDED" in out


def test_export_through_the_jobs_api(ray_head, database_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEPTHMILL_DATABASE_URL", database_url)
    monkeypatch.setenv("DEPTHMILL_HOME", str(tmp_path))
    monkeypatch.setenv("DEPTHMILL_MODEL", "tiny")
    code = main(["export", "--address", ray_head, "--to", str(tmp_path / "out"),
                 "--layout", "sbs,tb", "--kind", "photo", "--status", "completed"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert '"items": 0' in out and '"layouts": [' in out and "SUCCEEDED" in out


def test_export_checks_its_options_before_submitting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEPTHMILL_HOME", str(tmp_path))
    assert main(["export", "--address", "http://127.0.0.1:1", "--to", str(tmp_path),
                 "--layout", "sbs,stereo"]) == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and "'stereo'" in lines[0] and "crosseye" in lines[0], lines
    assert main(["export", "--address", "http://127.0.0.1:1", "--to", "s3:///x"]) == 2
