"""db/audit.py: entries are read newest first through filters and keyset pages, and pruning
takes only what is past the retention."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from db import audit
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
