"""The audit log (migration 017): who did what through the API, and what was refused. Every
statement on ``audit_log`` lives here."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import astuple, dataclass, fields
from datetime import datetime

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import class_row, tuple_row

from db import cursor as cursor_key
from db.errors import InvalidCursor
from db.vocabulary import MAX_PAGE_SIZE


@dataclass(frozen=True)
class NewEntry:
    key_name: str
    key_id: uuid.UUID | None
    client: str
    method: str
    route: str
    media_id: uuid.UUID | None
    target: str | None
    status: int


@dataclass(frozen=True)
class Entry(NewEntry):
    id: int
    at: datetime


@dataclass(frozen=True)
class AuditPage:
    items: list[Entry]
    next_cursor: str | None


_NEW = ", ".join(f.name for f in fields(NewEntry))
_COLUMNS = _NEW + ", id, at"


_INSERT = f"INSERT INTO audit_log ({_NEW}) VALUES ({', '.join(['%s'] * len(fields(NewEntry)))})"


def record(conn: psycopg.Connection, entry: NewEntry) -> None:
    conn.execute(_INSERT, astuple(entry))


def set_status(conn: psycopg.Connection, entry_id: int, status: int) -> None:
    conn.execute("UPDATE audit_log SET status = %s WHERE id = %s", (status, entry_id))


class RecordWithChange:
    """A request's entry, written in the first of its transactions that changes something (one
    that holds a transaction id), so the change and its record commit or roll back together.
    ``make_entry`` is asked then, once the request knows its caller; the status is the route's
    usual answer, and ``recorded`` (its id and entry, once committed) says where to correct it
    if the answer differs."""

    def __init__(self, make_entry: Callable[[], NewEntry]) -> None:
        self.make_entry = make_entry
        self.recorded: tuple[int, NewEntry] | None = None
        self._pending: tuple[int, NewEntry] | None = None
        self._closed = False

    def close(self) -> None:
        """No later transaction joins: the request has answered."""
        self._closed = True

    def before_commit(self, conn: psycopg.Connection) -> None:
        if (self.recorded is not None or self._closed
                or conn.info.transaction_status != TransactionStatus.INTRANS):
            return  # recorded, answered, or nothing open to join (idle, or aborted)
        with conn.cursor(row_factory=tuple_row) as cur:
            if cur.execute("SELECT pg_current_xact_id_if_assigned()").fetchone()[0] is None:
                return  # this transaction only read
            entry = self.make_entry()
            (entry_id,) = cur.execute(_INSERT + " RETURNING id", astuple(entry)).fetchone()
        self._pending = (entry_id, entry)

    def committed(self) -> None:
        if self.recorded is None and self._pending is not None:
            self.recorded = self._pending


def page(
    conn: psycopg.Connection,
    *,
    key_name: str | None = None,
    method: str | None = None,
    status: int | None = None,
    media_id: uuid.UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> AuditPage:
    """Entries newest first, filtered, a keyset page at a time (by id, which grows with time)."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    before = cursor_key.decode(cursor, int)[0] if cursor else None
    if before is not None and not 0 < before < 2**63:
        raise InvalidCursor(f"invalid cursor {cursor[:64]!r}")
    with conn.cursor(row_factory=class_row(Entry)) as cur:
        rows = cur.execute(
            f"""SELECT {_COLUMNS} FROM audit_log
                WHERE (%(key_name)s::text IS NULL OR key_name = %(key_name)s)
                  AND (%(method)s::text IS NULL OR method = %(method)s)
                  AND (%(status)s::int IS NULL OR status = %(status)s)
                  AND (%(media_id)s::uuid IS NULL OR media_id = %(media_id)s)
                  AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)
                  AND (%(until)s::timestamptz IS NULL OR at < %(until)s)
                  AND (%(before)s::bigint IS NULL OR id < %(before)s)
                ORDER BY id DESC LIMIT %(limit)s""",
            {"key_name": key_name, "method": method, "status": status, "media_id": media_id,
             "since": since, "until": until, "before": before, "limit": limit + 1},
        ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(rows, cursor_key.encode(rows[-1].id) if more else None)


def prune(conn: psycopg.Connection, older_than_days: float, batch: int = 10_000) -> int:
    """Delete up to ``batch`` entries older than the retention; how many went."""
    return conn.execute(
        """DELETE FROM audit_log WHERE id IN (
               SELECT id FROM audit_log WHERE at < now() - make_interval(secs => %s)
               ORDER BY at LIMIT %s)""",
        (older_than_days * 86400, batch),
    ).rowcount
