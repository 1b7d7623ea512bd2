from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cluster.media import configure_pillow
from db.connection import Database
from devkit.postgres import DatabaseFactory, admin_url


@pytest.fixture(scope="session", autouse=True)
def pillow_configured() -> None:
    """As every entry point that reads media does (the tests call probe and decode directly)."""
    configure_pillow()


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, server = admin_url(tmp_path_factory.mktemp("pg"))
    yield url
    if server is not None:
        server.stop()


@pytest.fixture(scope="session")
def database_factory(pg_admin_url: str) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(pg_admin_url)
    yield factory
    factory.drop_template()


@pytest.fixture
def database_url(database_factory: DatabaseFactory) -> Iterator[str]:
    """A freshly migrated database of this test's own."""
    with database_factory.database() as url:
        yield url


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection: each statement is its own transaction, as in production."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    with Database(database_url, max_size=16) as database:
        yield database


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster shared by the whole session (starting one takes seconds)."""
    from devkit import ray_cluster as rc

    rc.start_local_cluster()
    yield
    rc.stop()


@pytest.fixture(scope="session")
def serve_port(ray_cluster) -> int:
    from devkit import ray_cluster as rc

    return rc.start_serve()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB filesystem (tmpfs) where local storage lives: a full disk, for real."""
    storage = tmp_path / "storage"
    storage.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(storage)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    yield storage
    subprocess.run(["umount", str(storage)], check=True)


@pytest.fixture(scope="session")
def clamd():
    """A real ClamAV daemon (unix socket and TCP) with the test signatures, once a session."""
    from devkit.clamd import clamd_binary, running_clamd

    binary = clamd_binary()
    if binary is None:
        pytest.skip("no clamd binary: apt-get install clamav-daemon (the malware scan tests "
                    "need a real ClamAV daemon)")
    with running_clamd(binary) as daemon:
        yield daemon
