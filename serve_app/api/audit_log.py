"""The audit log's writer: an ASGI middleware that records every state-changing request (POST,
PUT, PATCH, DELETE, whatever its outcome) and every refused one (401, 403).

A change's entry is written in the transaction that makes the change (the first of the request's
transactions that writes anything: ``db.audit.RecordWithChange``, joined to them through
``db.connection.transaction_hook``), so a change is never committed without its entry nor an
entry without its change. It carries the route's usual status and is corrected when the answer
differs. A request that changed nothing (refused, failed, or a change that was not one) gets its
entry in a short transaction of its own when the response starts, before the client sees it.
Recorded: the time, the caller (a key's name, ``env key``, ``event token`` or ``anonymous``), the
peer address, the method, the route's template (never the query string, where tokens and
signatures travel), the media id and any other id in the path, and the status. Entries older
than ``DEPTHMILL_AUDIT_RETENTION_DAYS`` are pruned by the writer itself, at most once an hour per
replica.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db import audit
from db.connection import transaction_hook, unhooked
from serve_app.api.auth import ANONYMOUS
from serve_app.api.context import ApiContext, installed

log = logging.getLogger(__name__)

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REFUSED = frozenset({401, 403})
PRUNE_EVERY_S = 3600.0
# Path parameters that name something; a storage key is one too, a file name at most.
_IDS = ("item_id", "webhook_id", "delivery_id", "name_or_id", "key")


def entry_of(scope: Scope, status: int) -> audit.NewEntry:
    caller = scope.get("state", {}).get("caller")
    route = scope.get("route")
    params = scope.get("path_params") or {}
    media_id = params.get("media_id")
    if media_id is not None and not isinstance(media_id, uuid.UUID):
        try:
            media_id = uuid.UUID(str(media_id))
        except ValueError:
            media_id = None
    # Postgres text holds no NUL, and an unmatched path is anyone's input.
    target = ", ".join(f"{k}={params[k]}" for k in _IDS if k in params).replace("\x00", "") or None
    client = scope.get("client")
    return audit.NewEntry(
        key_name=caller.name if caller else ANONYMOUS,
        key_id=caller.key_id if caller else None,
        client=client[0] if client else "unknown",
        method=scope["method"],
        # The template, or for a path no route matched the path itself (no query string).
        route=getattr(route, "path", None) or scope["path"][:300].replace("\x00", ""),
        media_id=media_id,
        target=target[:300] if target else None,
        status=status,
    )


def _usual_status(scope: Scope) -> int:
    """The status the matched route answers with when all goes well."""
    return getattr(scope.get("route"), "status_code", None) or 200


class AuditLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._next_prune = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            return await self.app(scope, receive, send)
        # Made here, so that what the routes put in the request's state (the caller) is in
        # this dict whatever copies of the scope are made below.
        scope.setdefault("state", {})
        method, started = scope["method"], False
        with_change = audit.RecordWithChange(lambda: entry_of(scope, _usual_status(scope)))
        if method in CHANGES:
            token = transaction_hook.set(with_change)

        async def send_recorded(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                # What runs after the answer (background tasks) is not this request's change.
                with_change.close()
                status = message["status"]
                if method in CHANGES or status in REFUSED:
                    await self._record(scope, status, with_change.recorded)
            await send(message)

        try:
            await self.app(scope, receive, send_recorded)
        except Exception:
            if not started and method in CHANGES:
                await self._record(scope, 500, with_change.recorded)
            raise
        finally:
            if method in CHANGES:
                transaction_hook.reset(token)

    async def _record(self, scope: Scope, status: int,
                      recorded: tuple[int, audit.NewEntry] | None) -> None:
        app = scope.get("app")
        ctx: ApiContext = getattr(getattr(app, "state", None), "ctx", None) or installed()
        entry = entry_of(scope, status)
        try:
            with unhooked():
                await self._write(ctx, entry, recorded)
        except Exception:
            # The answer stands (its change, if any, is committed); say loudly what is missing.
            log.exception("audit entry lost: %s %s %s by %s", entry.method, entry.route,
                          entry.status, entry.key_name)

    async def _write(self, ctx: ApiContext, entry: audit.NewEntry,
                     recorded: tuple[int, audit.NewEntry] | None) -> None:
        if recorded is None:
            await run_in_threadpool(ctx.db.run, audit.record, entry)
        elif recorded[1].status != entry.status:
            await run_in_threadpool(ctx.db.run, audit.set_status, recorded[0], entry.status)
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
            await run_in_threadpool(ctx.db.run, audit.prune, ctx.settings.audit_retention_days)
