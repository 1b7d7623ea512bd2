"""/api/files/{key}: objects of the local storage backend behind signed URLs (S3 serves its own).

Answers carry an ETag and a Cache-Control good until the URL expires
(``cluster.storage.caching``), and a conditional request whose ETag still matches gets a 304, so
a browser cache or a CDN can front them."""

from __future__ import annotations

import os
import time
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import FileResponse

from cluster.storage import LocalStorage, ObjectNotFound, check_key
from cluster.storage import keys as storage_keys
from cluster.storage.caching import cache_control
from serve_app.api.deps import Context
from serve_app.api.errors import ApiError

router = APIRouter(tags=["files"])


def entity_tag(key: str, stat: os.stat_result) -> str:
    """An original's ETag is its content's sha256 (its key's name): the same on every gateway
    and every copy. Other objects are rewritten whole (a rename into place), so their mtime
    and size change with their content."""
    if storage_keys.content_addressed(key):
        return f'"{key.rsplit("/", 1)[-1].partition(".")[0]}"'
    return f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'


def still_matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match compares weakly (RFC 9110 13.1.2): a ``W/`` tag matches its strong form."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


@router.get("/api/files/{key:path}", summary="Download an object through a signed URL",
            responses={304: {"description": "Not Modified: the If-None-Match ETag still matches"}})
def download(
    key: str, ctx: Context,
    expires: Annotated[int, Query()], signature: Annotated[str, Query(max_length=128)],
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> FileResponse:
    if not isinstance(ctx.storage, LocalStorage) or ctx.signer is None:
        raise ApiError(404, "not_found", "files are served by the object store")
    try:
        check_key(key)
    except ValueError:
        raise ApiError(403, "forbidden", "invalid signature") from None
    ctx.signer.verify(key, expires, signature)  # before any answer, a 304 included
    path = ctx.storage.path(key)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ObjectNotFound(key) from None
    if not path.is_file():
        raise ObjectNotFound(key)
    etag = entity_tag(key, stat)
    headers = {"ETag": etag, "Cache-Control": cache_control(key, expires - int(time.time()))}
    if still_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return FileResponse(path, headers=headers, stat_result=stat)
