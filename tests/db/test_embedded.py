"""The embedded default: a real Postgres under DEPTHMILL_HOME that keeps its data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from db import queue
from db.embedded import EmbeddedPostgres
from db.migrate import applied_versions, migrate
from devkit.factories import insert_media


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPTHMILL_")}
    env["DEPTHMILL_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.mark.slow
def test_data_survives_a_restart_of_the_embedded_server(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    migrated = run_cli(home, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "applied 001_initial" in migrated.stdout

    server = EmbeddedPostgres(home / "postgres")
    with psycopg.connect(server.url, autocommit=True) as conn:
        queue.enqueue(conn, insert_media(conn, "photo").id, "tiny")
        queue.enqueue(conn, insert_media(conn, "video").id, "tiny")
    server.stop()
    # Postgres removes postmaster.pid only at the end of a clean shutdown.
    assert not (home / "postgres" / "postmaster.pid").exists(), "server still running"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url, connect_timeout=2)

    # A new process starts the server again on the same data directory.
    status = run_cli(home, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["database"] == "embedded"
    assert report["queue"]["waiting"] == 2
    assert report["by_kind"]["queued"] == {"photo": 1, "video": 1}
    assert run_cli(home, "migrate").stdout.strip() == "database schema is up to date"


@pytest.mark.slow
def test_status_reads_and_never_migrates(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    status = run_cli(home, "status")
    assert status.returncode == 1
    assert "run `depthmill migrate`" in " ".join(status.stdout.split())
    server = EmbeddedPostgres(home / "postgres")
    try:
        assert applied_versions(server.url) == []
    finally:
        server.stop()


def test_migrate_on_embedded_server_is_idempotent(tmp_path):
    server = EmbeddedPostgres(tmp_path / "pg")
    try:
        assert migrate(server.url)
        assert migrate(server.url) == []
    finally:
        server.stop()
