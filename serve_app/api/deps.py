"""Annotated dependencies, so route signatures read like sentences.

All of them are ``async``: none blocks, and FastAPI runs a plain ``def`` dependency in a worker
thread, a thread hop per dependency per request (under upload load, a tenth of the gateway's time
holding the GIL). On the event loop the rate limiter's buckets are also only ever touched by one
thread."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cluster.config.settings import Settings
from cluster.storage import Storage
from db.connection import Database
from serve_app.api.context import ApiContext, installed
from serve_app.api.errors import ApiError

_bearer = HTTPBearer(auto_error=False)


async def get_context(request: Request) -> ApiContext:
    ctx = getattr(request.app.state, "ctx", None)
    return ctx if ctx is not None else installed()


Context = Annotated[ApiContext, Depends(get_context)]


async def get_db(ctx: Context) -> Database:
    return ctx.db


async def get_storage(ctx: Context) -> Storage:
    return ctx.storage


async def get_settings(ctx: Context) -> Settings:
    return ctx.settings


Db = Annotated[Database, Depends(get_db)]
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
Store = Annotated[Storage, Depends(get_storage)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def client_id(request: Request) -> str:
    auth = request.headers.get("authorization")
    if auth:
        return "key:" + auth[-12:]
    return "ip:" + (request.client.host if request.client else "unknown")


async def upload_rate_limit(ctx: Context, request: Request) -> None:
    wait = ctx.upload_limiter.take(client_id(request))
    if wait > 0:
        raise ApiError(429, "rate_limited", "too many uploads; slow down",
                       {"Retry-After": str(max(1, round(wait)))})
