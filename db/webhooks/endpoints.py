"""Webhook endpoints: create, list, change, rotate the secret, delete."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import psycopg
from psycopg.rows import class_row

from db.errors import NotFound
from db.events import check_patterns
from db.webhooks.execute import fetch_one
from db.webhooks.types import Webhook

_WEBHOOK_COLUMNS = ("w.id, w.url, w.events, w.description, w.enabled, w.disabled_reason, "
                    "w.failing_since, w.created_at, w.updated_at")


def create(
    conn: psycopg.Connection, url: str, events: Sequence[str], secret: str,
    description: str | None = None,
) -> Webhook:
    """A new enabled endpoint. ``url`` must have passed the caller's address policy already
    (that needs DNS and settings, which are not the database's)."""
    patterns = check_patterns(events)
    if not patterns:
        raise ValueError("subscribe to at least one event type")
    with conn.cursor(row_factory=class_row(Webhook)) as cur:
        return cur.execute(
            f"""INSERT INTO webhooks AS w (url, events, description, secret)
                VALUES (%s, %s, %s, %s) RETURNING {_WEBHOOK_COLUMNS}""",
            [url, patterns, description, secret],
        ).fetchone()


def list_webhooks(conn: psycopg.Connection) -> list[Webhook]:
    with conn.cursor(row_factory=class_row(Webhook)) as cur:
        return cur.execute(
            f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks w ORDER BY w.created_at, w.id").fetchall()


def get(conn: psycopg.Connection, webhook_id: uuid.UUID) -> Webhook:
    with conn.cursor(row_factory=class_row(Webhook)) as cur:
        row = cur.execute(f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks w WHERE w.id = %s",
                          [webhook_id]).fetchone()
    if row is None:
        raise NotFound(f"no webhook {webhook_id}")
    return row


_UNSET = object()


def update(
    conn: psycopg.Connection,
    webhook_id: uuid.UUID,
    *,
    url: str | None = None,
    events: Sequence[str] | None = None,
    description: object = _UNSET,
    enabled: bool | None = None,
) -> Webhook:
    """Change what is given. Enabling clears the disabled reason and the failing clock (the
    operator says the receiver is fixed); disabling by hand says so in the reason."""
    sets, params = ["updated_at = now()"], []
    if url is not None:
        sets.append("url = %s")
        params.append(url)
    if events is not None:
        patterns = check_patterns(events)
        if not patterns:
            raise ValueError("subscribe to at least one event type")
        sets.append("events = %s")
        params.append(patterns)
    if description is not _UNSET:
        sets.append("description = %s")
        params.append(description)
    if enabled is True:
        sets.append("enabled = true, disabled_reason = NULL, failing_since = NULL")
    elif enabled is False:
        sets.append("enabled = false, disabled_reason = 'disabled by hand'")
    with conn.cursor(row_factory=class_row(Webhook)) as cur:
        row = cur.execute(
            f"UPDATE webhooks w SET {', '.join(sets)} WHERE w.id = %s RETURNING {_WEBHOOK_COLUMNS}",
            [*params, webhook_id],
        ).fetchone()
    if row is None:
        raise NotFound(f"no webhook {webhook_id}")
    return row


def rotate_secret(conn: psycopg.Connection, webhook_id: uuid.UUID, secret: str) -> None:
    """Sign with ``secret`` from now on. Deliveries already claimed were signed with the old one."""
    row = fetch_one(conn, "UPDATE webhooks SET secret = %s, updated_at = now() WHERE id = %s "
               "RETURNING id", [secret, webhook_id])
    if row is None:
        raise NotFound(f"no webhook {webhook_id}")


def delete(conn: psycopg.Connection, webhook_id: uuid.UUID) -> None:
    """The endpoint and its deliveries (ON DELETE CASCADE)."""
    if fetch_one(conn, "DELETE FROM webhooks WHERE id = %s RETURNING id", [webhook_id]) is None:
        raise NotFound(f"no webhook {webhook_id}")
