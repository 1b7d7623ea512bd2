from __future__ import annotations

import threading

import psycopg

from db.migrate import applied_versions, load_migrations, migrate
from tests.utils.postgres import with_dbname


def test_migrations_are_numbered_and_ordered():
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(versions) and versions[0] == 1


def test_migrate_twice_is_a_no_op(database_url):
    # database_url comes migrated from the template
    assert migrate(database_url) == []
    assert applied_versions(database_url) == [m.version for m in load_migrations()]


def test_concurrent_migrators_on_a_fresh_database(pg_admin_url):
    name = "depthmill_migrate_race"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = with_dbname(pg_admin_url, name)
    applied: list[list] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def run() -> None:
        try:
            start.wait()
            applied.append(migrate(url))
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors
        # Exactly one migrator applied everything; the others found it done.
        assert sorted(len(a) for a in applied) == [0, 0, 0, len(load_migrations())]
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(
                load_migrations()
            )
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
