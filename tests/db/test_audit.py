"""db/audit.py: entries are read newest first through filters and keyset pages, and pruning
takes only what is past the retention."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from db import audit
from db.connection import transaction_hook, unhooked
from db.errors import InvalidCursor


def entry(status: int = 200, *, key: str = "k", method: str = "POST",
          media_id: uuid.UUID | None = None) -> audit.NewEntry:
    return audit.NewEntry(key_name=key, key_id=None, client="10.0.0.1", method=method,
                          route="/api/media/{media_id}" if media_id else "/api/media/upload",
                          media_id=media_id, target=None, status=status)


def test_pages_filters_and_pruning(conn):
    media = uuid.uuid4()
    for e in (entry(), entry(403, key="viewer", method="DELETE", media_id=media),
              entry(204, method="DELETE", media_id=media), entry(401, key="anonymous")):
        audit.record(conn, e)
    first = audit.page(conn, limit=3)
    assert [e.status for e in first.items] == [401, 204, 403]
    rest = audit.page(conn, limit=3, cursor=first.next_cursor)
    assert [e.status for e in rest.items] == [200] and rest.next_cursor is None
    assert [e.status for e in audit.page(conn, media_id=media).items] == [204, 403]
    assert [e.key_name for e in audit.page(conn, method="DELETE", status=403).items] == ["viewer"]
    now = datetime.now(UTC)
    assert len(audit.page(conn, since=now - timedelta(minutes=1), until=now + timedelta(minutes=1)).items) == 4
    assert audit.page(conn, until=now - timedelta(minutes=1)).items == []
    with pytest.raises(InvalidCursor):
        audit.page(conn, cursor="zz")

    conn.execute("UPDATE audit_log SET at = now() - interval '100 days' WHERE status IN (200, 401)")
    assert audit.prune(conn, 90) == 2
    assert [e.status for e in audit.page(conn).items] == [204, 403]
    assert audit.prune(conn, 90) == 0


def test_an_entry_joins_the_first_transaction_that_changes_something(db):
    def xmin_of_entries(conn):
        return [r["xmin"] for r in conn.execute("SELECT xmin::text FROM audit_log ORDER BY id")]

    def change(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS t (x int)")
        return conn.execute("INSERT INTO t VALUES (1) RETURNING xmin::text").fetchone()["xmin"]

    def fail(conn):
        change(conn)
        raise RuntimeError("the change fails")

    hook = audit.RecordWithChange(lambda: entry(201))
    token = transaction_hook.set(hook)
    try:
        db.run(lambda conn: conn.execute("SELECT 1"))  # a read: nothing recorded
        assert db.run(xmin_of_entries) == [] and hook.recorded is None
        with pytest.raises(RuntimeError):
            db.run(fail)  # rolled back, its entry with it
        assert db.run(xmin_of_entries) == [] and hook.recorded is None
        changed_in = db.run(change)
        assert db.run(xmin_of_entries) == [changed_in]
        assert hook.recorded is not None and hook.recorded[1].status == 201
        db.run(change)  # the request's later changes do not add entries
        with unhooked():
            db.run(change)
        hook = audit.RecordWithChange(lambda: entry(201))
        hook.close()  # the request has answered: what runs after is not its change
        transaction_hook.set(hook)
        db.run(change)
    finally:
        transaction_hook.reset(token)
    assert db.run(xmin_of_entries) == [changed_in]
