"""``/api/v1/...`` is the stable contract; ``/api/...`` stays as its alias.

One set of routes serves both: requests under ``/api/v1/`` have the version taken off their path
before anything else sees them (outside every middleware, so the body limit, CORS and key checks
apply to both spellings alike), and the OpenAPI document lists the routes under ``/api/v1``. A
breaking change will come as ``/api/v2`` beside it, v1 kept working meanwhile.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

API = "/api/"
V1 = "/api/v1/"

MIRROR_NOTE = (
    "\n\n**Versions.** Every path here is the stable `/api/v1` contract. `/api/...` mirrors it "
    "exactly (`/api/media` is `/api/v1/media`): the same routes, answers and keys. Breaking "
    "changes come as `/api/v2` beside it, with `/api/v1` kept for at least two releases after."
)


def unversioned(path: str) -> str:
    """``/api/v1/x`` → ``/api/x``; any other path unchanged."""
    return API + path[len(V1):] if path.startswith(V1) else path


def versioned(path: str) -> str:
    """``/api/x`` → ``/api/v1/x``: how a route is documented."""
    return V1 + path[len(API):] if path.startswith(API) and not path.startswith(V1) else path


class V1Alias:
    """Routes a request for ``/api/v1/x`` as ``/api/x``. The raw path stays as sent, so access
    logs show what the client asked for."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            root = scope.get("root_path", "")
            path = scope["path"]
            inside = path[len(root):] if root and path.startswith(root) else path
            if inside.startswith(V1):
                scope = {**scope, "path": path[:len(path) - len(inside)] + unversioned(inside)}
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    """Serve ``/api/v1`` and document it. Call once the app's routes are in."""
    build = app.build_middleware_stack
    # Around the whole stack, however many middlewares are added later (the gateway adds the
    # body limit and CORS when its replica starts).
    app.build_middleware_stack = lambda: V1Alias(build())  # type: ignore[method-assign]

    generate = app.openapi
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        base = generate()  # FastAPI's own, cached until the routes change
        if cache.get("base") is not base:
            info = {**base["info"],
                    "description": (base["info"].get("description") or "") + MIRROR_NOTE}
            cache["base"] = base
            cache["doc"] = {**base, "info": info,
                            "paths": {versioned(p): ops for p, ops in base["paths"].items()}}
        return cache["doc"]

    app.openapi = openapi  # type: ignore[method-assign]
