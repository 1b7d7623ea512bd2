"""/api/files/{key}: objects of the local storage backend behind signed URLs (S3 serves its own)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from cluster.storage import LocalStorage, ObjectNotFound, check_key
from serve_app.api.deps import Context
from serve_app.api.errors import ApiError

router = APIRouter(tags=["files"])


@router.get("/api/files/{key:path}", summary="Download an object through a signed URL")
def download(
    key: str, ctx: Context,
    expires: Annotated[int, Query()], signature: Annotated[str, Query(max_length=128)],
) -> FileResponse:
    if not isinstance(ctx.storage, LocalStorage) or ctx.signer is None:
        raise ApiError(404, "not_found", "files are served by the object store")
    try:
        check_key(key)
    except ValueError:
        raise ApiError(403, "forbidden", "invalid signature") from None
    ctx.signer.verify(key, expires, signature)
    path = ctx.storage.path(key)
    if not path.is_file():
        raise ObjectNotFound(key)
    return FileResponse(path)
