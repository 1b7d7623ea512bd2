"""Test databases: one migrated template per session, cloned per test.

The server is the machine's Postgres (CI: 127.0.0.1:5432, trust auth) or, where none answers,
an embedded pgserver in a temp directory, so the suite runs on a bare laptop too.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from db.migrate import migrate

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def admin_url(tmp_root: Path) -> tuple[str, object | None]:
    """An URL with CREATEDB rights, and the embedded server handle if one had to be started."""
    url = os.environ.get("DEPTHMILL_TEST_ADMIN_URL", DEFAULT_ADMIN_URL)
    if reachable(url):
        return url, None
    from db.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_root / "pg-tests")
    return server.url, server


def with_dbname(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


class DatabaseFactory:
    """Creates the migrated template once, then a fresh clone of it per test."""

    def __init__(self, admin: str) -> None:
        self.admin = admin
        self.template = f"depthmill_template_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.template}"')
        migrate(with_dbname(admin, self.template))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE \"{self.template}\" WITH IS_TEMPLATE true")

    @contextmanager
    def database(self) -> Iterator[str]:
        name = f"depthmill_t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        try:
            yield with_dbname(self.admin, name)
        finally:
            with psycopg.connect(self.admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_template(self) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE \"{self.template}\" WITH IS_TEMPLATE false")
            conn.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')


def restart_embedded(server, down_s: float, while_down=None) -> None:
    """Crash-stop an embedded server (``-m immediate``: no clean shutdown), keep it down for
    ``down_s`` seconds (running ``while_down`` meanwhile), then start it on the same socket."""
    import time

    import pgserver

    pg = server._server
    pgserver.pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=pg.pgdata, user=pg.system_user)
    started = time.monotonic()
    if while_down is not None:
        while_down()
    time.sleep(max(0.0, down_s - (time.monotonic() - started)))
    pg.ensure_postgres_running()
