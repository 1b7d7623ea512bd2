from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.types.json import Jsonb

from db import events, webhooks
from db.migrate import applied_versions, load_migrations, migrate
from devkit.postgres import with_dbname


def test_migrations_are_numbered_and_ordered():
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(versions) and versions[0] == 1


def test_migrate_twice_is_a_no_op(database_url):
    # database_url comes migrated from the template
    assert migrate(database_url) == []
    assert applied_versions(database_url) == [m.version for m in load_migrations()]


@contextmanager
def fresh_database(pg_admin_url: str, name: str) -> Iterator[str]:
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_dbname(pg_admin_url, name)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_concurrent_migrators_on_a_fresh_database(pg_admin_url):
    applied: list[list] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    with fresh_database(pg_admin_url, "depthmill_migrate_race") as url:

        def run() -> None:
            try:
                start.wait()
                applied.append(migrate(url))
            except BaseException as exc:
                errors.append(exc)

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


def test_completed_items_of_an_existing_database_move_to_the_completed_table(pg_admin_url):
    with fresh_database(pg_admin_url, "depthmill_migrate_data") as url:
        migrate(url, [m for m in load_migrations() if m.version < 6])
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                """
                INSERT INTO media_items (kind, storage_key, sha256, mime, bytes)
                SELECT 'photo', 'originals/' || g, encode(sha256(g::text::bytea), 'hex'),
                       'image/jpeg', 1000
                FROM generate_series(1, 3) g
                """
            )
            conn.execute(
                """
                INSERT INTO processing_queue (media_id, model_id, priority, kind, bytes, mime,
                                              storage_key, status, completed_at)
                SELECT id, 'tiny', 1, kind, bytes, mime, storage_key, s, now()
                FROM (SELECT id, kind, bytes, mime, storage_key,
                             (ARRAY['completed', 'failed', 'queued'])[row_number() OVER ()] AS s
                      FROM media_items) m
                """
            )
        migrate(url)
        with psycopg.connect(url) as conn:
            hot = conn.execute("SELECT status FROM processing_queue ORDER BY 1").fetchall()
            done = conn.execute("SELECT status FROM processing_queue_completed").fetchall()
            every = conn.execute("SELECT count(*) FROM queue_items").fetchone()[0]
        assert hot == [("failed",), ("queued",)]
        assert done == [("completed",)]
        assert every == 3


def test_events_and_deliveries_of_an_existing_database_keep_their_ids(pg_admin_url):
    with fresh_database(pg_admin_url, "depthmill_migrate_events") as url:
        migrate(url, [m for m in load_migrations() if m.version < 20])
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO webhooks (url, events, secret) "
                         "VALUES ('https://example.com/h', '{item.*}', 'whsec_x')")
            ids = [conn.execute("INSERT INTO events (type, data) VALUES (%s, %s) RETURNING id",
                                [t, Jsonb({"n": i})]).fetchone()[0]
                   for i, t in enumerate(["item.queued", "media.created", "item.failed",
                                          "media.deleted"])]
            pruned = ids.pop()
            conn.execute("DELETE FROM events WHERE id = %s", [pruned])
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            read = events.read_after(conn, None)
            assert [(e.id, e.type, e.data) for e in read] == [
                (ids[0], "item.queued", {"n": 0}), (ids[1], "media.created", {"n": 1}),
                (ids[2], "item.failed", {"n": 2})]
            assert [e.id for e in events.read_after(conn, ids[0])] == ids[1:]
            pending = webhooks.claim(conn, 10, "d", 30)
            assert [(d.event_id, d.event_type) for d in pending] == [(ids[0], "item.queued")]
            # New events follow every id ever taken, a pruned one too: a receiver that saw it
            # would take a new event with its id for a repeat.
            new = events.emit(conn, "webhook.test", {})
            assert new > pruned and [e.id for e in events.read_after(conn, ids[-1])] == [new]
