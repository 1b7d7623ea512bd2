"""Every error leaves as ``{"error": {"code", "message"}}`` with the right status; a 5xx only for
real server faults."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cluster.storage.signing import SignatureError
from cluster.media.malware import ScanFailed, ScannerUnavailable
from cluster.storage import ObjectNotFound, StorageFull, StorageUnavailable
from db.connection import DatabaseUnavailable
from db.errors import IllegalTransition, InvalidCursor, NotFound
from serve_app.api.schemas import ErrorOut

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
          415: "unsupported_media_type", 422: "invalid_request", 429: "rate_limited"}


def documented(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI entries for the errors a route can answer, so clients (and schemathesis) know them."""
    return {status: {"model": ErrorOut, "description": HTTPStatus(status).phrase}
            for status in statuses}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error_response(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, _CODES.get(exc.status_code, "error"),
                              str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return error_response(404, "not_found", str(exc))

    @app.exception_handler(ObjectNotFound)
    async def _object_not_found(request: Request, exc: ObjectNotFound):
        return error_response(404, "not_found", "the requested file does not exist")

    @app.exception_handler(IllegalTransition)
    async def _conflict(request: Request, exc: IllegalTransition):
        return error_response(409, "illegal_transition", str(exc))

    @app.exception_handler(InvalidCursor)
    async def _cursor(request: Request, exc: InvalidCursor):
        return error_response(400, "invalid_cursor", str(exc))

    @app.exception_handler(SignatureError)
    async def _signature(request: Request, exc: SignatureError):
        return error_response(403, "forbidden", str(exc))

    @app.exception_handler(DatabaseUnavailable)
    async def _db_down(request: Request, exc: DatabaseUnavailable):
        return error_response(503, "database_unavailable", "the database is unreachable; retry later",
                              {"Retry-After": "5"})

    @app.exception_handler(StorageUnavailable)
    async def _storage_down(request: Request, exc: StorageUnavailable):
        return error_response(503, "storage_unavailable", "storage is unreachable; retry later",
                              {"Retry-After": "5"})

    @app.exception_handler(ScannerUnavailable)
    async def _scanner_down(request: Request, exc: ScannerUnavailable):
        # Unscanned is refused (DEPTHMILL_CLAMD_UNAVAILABLE=refuse). The daemon's address is
        # logged, not answered.
        log.warning("upload refused: %s", exc)
        if isinstance(exc, ScanFailed):
            return error_response(503, "scan_failed", f"the malware scanner could not scan the "
                                  f"file ({exc.reason}); nothing was stored")
        return error_response(503, "scanner_unavailable", "the malware scanner is unreachable; "
                              "nothing was stored; retry later", {"Retry-After": "30"})

    @app.exception_handler(StorageFull)
    async def _storage_full(request: Request, exc: StorageFull):
        return error_response(507, "storage_full", "storage is full; nothing was stored",
                              {"Retry-After": "60"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")
