"""Refuse a query string that carries a NUL character: Postgres text cannot hold one, and a text
parameter (a model id filter, a cursor) would reach a query and fail there as a 500."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.api.errors import error_response


class RefuseNulInQuery:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and b"%00" in scope.get("query_string", b""):
            response = error_response(422, "invalid_request",
                                      "query parameters cannot contain NUL characters")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
