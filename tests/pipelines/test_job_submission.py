"""`depthmill reprocess` submits through the Ray Jobs SDK to a real `ray start --head`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.cli import main
from tests.utils.s3 import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_head(tmp_path):
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    dashboard = free_port()
    # Jobs run `python` from the head's PATH: this test's interpreter, as on a real node where
    # the project is installed into the python on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": path}
    subprocess.run(
        [ray_bin, "start", "--head", "--port", str(free_port()), "--dashboard-port", str(dashboard),
         "--dashboard-host", "127.0.0.1", "--num-cpus", "2", "--disable-usage-stats",
         "--temp-dir", str(Path("/tmp") / f"ray-jobs-{os.getpid()}")],
        check=True, capture_output=True, env=env,
    )
    yield f"http://127.0.0.1:{dashboard}"
    subprocess.run([ray_bin, "stop", "--force"], capture_output=True, env=env)


def test_reprocess_dry_run_through_the_jobs_api(ray_head, database_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEPTHMILL_DATABASE_URL", database_url)
    monkeypatch.setenv("DEPTHMILL_HOME", str(tmp_path))
    monkeypatch.setenv("DEPTHMILL_MODEL", "tiny")
    code = main(["reprocess", "--address", ray_head, "--dry-run", "--kind", "photo"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert '"dry_run": true' in out and '"selected": {}' in out
    assert "SUCCEEDED" in out
