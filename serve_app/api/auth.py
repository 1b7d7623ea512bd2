"""Who is calling, and may they: API keys and their scopes.

Every protected route declares the scope it needs with ``needs(...)`` (``READ``, ``WRITE``,
``ADMIN``). Scopes are ordered: a key with ``admin`` may also write and read, one with ``write``
may also read. Keys come from two places: ``DEPTHMILL_API_KEYS`` (each an admin key, compared in
constant time, no database needed) and the ``api_keys`` table (``depthmill keys create``).

With neither (no env key, and no key ever made) the API is open, the laptop default; the first
key made closes it, and it stays closed (revoked keys count). What a replica read about a key is
trusted for ``DEPTHMILL_API_KEY_CACHE_S``, so a revoked key is refused within that long.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request

from db import keys
from serve_app.api.deps import BearerCredentials, Context
from serve_app.api.errors import ApiError

ENV_KEY = "env key"
ANONYMOUS = "anonymous"
EVENT_TOKEN = "event token"
_BEARER = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Caller:
    name: str  # a key's name, ENV_KEY, EVENT_TOKEN or ANONYMOUS: what the audit log records
    key_id: uuid.UUID | None
    scopes: tuple[str, ...]

    def may(self, scope: str) -> bool:
        rank = keys.SCOPES.index(scope)
        return any(keys.SCOPES.index(s) >= rank for s in self.scopes)


OPEN = Caller(ANONYMOUS, None, ("admin",))
ENV = Caller(ENV_KEY, None, ("admin",))


def _remember(request: Request, caller: Caller) -> Caller:
    request.state.caller = caller  # for the audit log, which runs outside the route
    return caller


async def identify(ctx: Context, request: Request, credentials: BearerCredentials) -> Caller:
    """The caller a request's key names; 401 for a missing, unknown, revoked or expired key."""
    env_keys = ctx.settings.api_keys
    if credentials is not None and env_keys:
        given = credentials.credentials.encode()
        if any(hmac.compare_digest(given, k.encode()) for k in env_keys):
            return _remember(request, ENV)
    if not env_keys and not await ctx.keys.any_exist():
        return _remember(request, OPEN)
    if credentials is None:
        raise ApiError(401, "unauthorized", "missing API key: send Authorization: Bearer <key>",
                       _BEARER)
    found = await ctx.keys.find(credentials.credentials)
    if found is None:
        raise ApiError(401, "unauthorized", "invalid API key", _BEARER)
    _remember(request, Caller(found.name, found.id, tuple(found.scopes)))
    if found.revoked_at is not None:
        raise ApiError(401, "unauthorized", f"API key {found.name!r} was revoked", _BEARER)
    if not found.usable_at(datetime.now(UTC)):
        raise ApiError(401, "unauthorized",
                       f"API key {found.name!r} expired at {found.expires_at:%Y-%m-%d %H:%M} UTC",
                       _BEARER)
    return request.state.caller


Identified = Annotated[Caller, Depends(identify)]


def authorize(caller: Caller, scope: str) -> Caller:
    if not caller.may(scope):
        raise ApiError(403, "forbidden", f"this needs a key with scope {scope!r}; key "
                       f"{caller.name!r} has {', '.join(caller.scopes)}")
    return caller


def needs(scope: str) -> Callable[..., Awaitable[Caller]]:
    """The dependency a route declares: a key (or an open API) that may do ``scope``."""
    if scope not in keys.SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def check(caller: Identified) -> Caller:
        return authorize(caller, scope)

    # Types, not strings: Serve ships the app to its replicas by value, and a closure pickled by
    # value keeps only the globals its code names, which a string annotation is not.
    check.__annotations__ = {"caller": Identified, "return": Caller}
    check.required_scope = scope  # read back by the OpenAPI document (main.py)
    check.__name__ = f"needs_{scope}"
    return check


READ = Depends(needs("read"))
WRITE = Depends(needs("write"))
ADMIN = Depends(needs("admin"))
