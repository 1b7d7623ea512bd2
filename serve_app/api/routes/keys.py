"""/api/keys: API keys with scopes (admin). The key itself is in the answer to its creation and
nowhere else, ever: the database keeps only its hash (db/keys.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from db import keys
from db.keys import ApiKey, NameTaken
from serve_app.api.auth import ADMIN
from serve_app.api.deps import Context
from serve_app.api.errors import ApiError, documented

router = APIRouter(prefix="/api/keys", tags=["keys"], dependencies=[ADMIN])

Scope = Literal["read", "write", "admin"]
KeyName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00\s][^\x00]*$",
                               examples=["ci-uploader"])]


class KeyIn(BaseModel):
    name: KeyName
    scopes: list[Scope] = Field(min_length=1, max_length=3, examples=[["read", "write"]],
                                description="admin may also write, write may also read")
    expires_in_days: float | None = Field(default=None, gt=0, le=36500,
                                          description="unset: the key never expires")


class KeyOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str = Field(description="the public part of the key, `dm_<prefix>_…`, to tell keys apart")
    scopes: list[Scope]
    created_at: datetime
    last_used_at: datetime | None = Field(description="to the minute: uses are recorded at most "
                                                      "once a minute")
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, k: ApiKey) -> KeyOut:
        return cls(id=k.id, name=k.name, prefix=k.prefix, scopes=k.scopes, created_at=k.created_at,
                   last_used_at=k.last_used_at, expires_at=k.expires_at, revoked_at=k.revoked_at)


class NewKeyOut(KeyOut):
    key: str = Field(description="send as `Authorization: Bearer <key>`; shown this once only")


@router.post("", status_code=201, response_model=NewKeyOut, responses=documented(409),
             summary="Make a key (its secret is in this answer only)")
async def create(body: KeyIn, ctx: Context) -> NewKeyOut:
    expires = (datetime.now(UTC) + timedelta(days=body.expires_in_days)
               if body.expires_in_days else None)
    try:
        made, secret = await run_in_threadpool(ctx.db.run, keys.create, ctx.key_secret,
                                               body.name, list(body.scopes), expires)
    except NameTaken as e:
        raise ApiError(409, "conflict", str(e)) from None
    ctx.keys.forget()  # here at once; other replicas within DEPTHMILL_API_KEY_CACHE_S
    return NewKeyOut(**KeyOut.of(made).model_dump(), key=secret)


@router.get("", response_model=list[KeyOut], summary="Every key, revoked ones too (no secrets)")
async def list_keys(ctx: Context) -> list[KeyOut]:
    return [KeyOut.of(k) for k in await run_in_threadpool(ctx.db.run, keys.list_keys)]


@router.delete("/{name_or_id}", status_code=204, responses=documented(404),
               summary="Revoke a key, by name, id or prefix")
async def revoke(name_or_id: Annotated[str, Path(max_length=100, pattern=r"^[^\x00]+$")],
                 ctx: Context) -> Response:
    await run_in_threadpool(ctx.db.run, keys.revoke, name_or_id)
    ctx.keys.forget()
    return Response(status_code=204)
