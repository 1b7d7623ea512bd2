"""/api/audit: the audit log (admin), newest first, filtered, in keyset pages."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from db import audit
from db.vocabulary import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from serve_app.api.auth import ADMIN
from serve_app.api.deps import Context
from serve_app.api.errors import documented

router = APIRouter(prefix="/api/audit", tags=["audit"], dependencies=[ADMIN])


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    key_name: str = Field(description="the key's name, `env key`, `event token` or `anonymous`")
    key_id: uuid.UUID | None
    client: str = Field(description="the peer address the gateway saw")
    method: str
    route: str = Field(description="the route's template, e.g. /api/media/{media_id}")
    media_id: uuid.UUID | None
    target: str | None = Field(description="other ids in the path, e.g. `item_id=…`")
    status: int


class AuditPageOut(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


@router.get("", response_model=AuditPageOut, responses=documented(400),
            summary="Who did what, and what was refused; newest first, paged")
async def entries(
    ctx: Context,
    key_name: Annotated[str | None, Query(max_length=100, pattern=r"^[^\x00]*$")] = None,
    method: Literal["POST", "PUT", "PATCH", "DELETE", "GET", "HEAD", "OPTIONS"] | None = None,
    status: Annotated[int | None, Query(ge=100, le=599, description="the answer's status")] = None,
    media_id: uuid.UUID | None = None,
    since: Annotated[datetime | None, Query(description="at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="before (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> AuditPageOut:
    page = await run_in_threadpool(
        ctx.db.run, audit.page, key_name=key_name, method=method, status=status,
        media_id=media_id, since=since, until=until, limit=limit, cursor=cursor)
    return AuditPageOut(items=[AuditEntryOut(**vars(e)) for e in page.items],
                        next_cursor=page.next_cursor)
