"""The FastAPI application: routers, error handlers, CORS and API keys. No I/O here; the gateway
deployment (or a test) attaches an ApiContext to ``app.state.ctx``."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.middleware.cors import CORSMiddleware

from serve_app.api import errors, log_redact, versioning
from serve_app.api.audit_log import AuditLog
from serve_app.api.body_limit import UploadBodyLimit
from serve_app.api.event_schemas import install_event_docs
from serve_app.api.query_guard import RefuseNulInQuery
from serve_app.api.routes import (
    audit, events, files, health, keys, media, models, queue, stereo, webhooks,
)
from serve_app.web.pages import connect, install_web_app

DESCRIPTION = """Turn photos and videos into depth maps. Upload media, watch the queue, fetch
depth maps through signed URLs. Once a key exists (`DEPTHMILL_API_KEYS`, or one made with
`depthmill keys create` or POST /api/keys), send `Authorization: Bearer <key>`; each route says the
scope it needs (`read`, `write` or `admin`; admin may also write, write may also read). Live
events: GET /api/events (Server-Sent Events); each event type's body is in the `webhooks`
section."""


def create_api(cors_origins: list[str] | None = None, max_upload_bytes: int | None = None, *,
               configure: bool = True) -> FastAPI:
    """The API; with ``configure=False`` its middleware waits for ``configure_api``."""
    app = FastAPI(title="depthmill", version="0.1.0", description=DESCRIPTION)
    errors.install(app)
    app.add_middleware(RefuseNulInQuery)
    if configure:
        configure_api(app, cors_origins, max_upload_bytes)
    # Each route declares the scope it needs (serve_app/api/auth.py); every protected one can
    # answer a bad key, a key without that scope, bad parameters and a database outage.
    common = errors.documented(401, 403, 422, 503)
    keyed = [media.router, queue.router, stereo.router, webhooks.router, models.router,
             keys.router, audit.router]
    for router in keyed:
        app.include_router(router, responses=common)
    # A key or, for the stream only, a token from POST /api/events/token (EventSource sends no
    # headers); each route says which.
    app.include_router(events.router)
    install_event_docs(app)
    log_redact.install()
    app.include_router(health.router)  # open: load balancers and monitors probe it
    app.include_router(files.router, responses=errors.documented(403, 404, 422))  # signed
    install_web_app(app)
    _document_scopes(app, [*keyed, events.router, connect])
    versioning.install(app)  # /api/v1 serves and documents every route above
    return app


def _required_scope(dependencies) -> str | None:
    for dep in dependencies:
        call = getattr(dep, "call", getattr(dep, "dependency", None))
        scope = getattr(call, "required_scope", None) or _required_scope(
            getattr(dep, "dependencies", ()))
        if scope:
            return scope
    return None


def _document_scopes(app: FastAPI, routers: list[APIRouter]) -> None:
    """Each protected operation's description says the scope it needs, and carries it as
    ``x-required-scope``; the bearer scheme itself is FastAPI's, from the HTTPBearer dependency."""
    needed: dict[tuple[str, str], str] = {}
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute):
                scope = (_required_scope(route.dependant.dependencies)
                         or _required_scope(router.dependencies))
                for method in route.methods if scope else ():
                    needed[method.lower(), route.path_format] = scope
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            for (method, path), scope in needed.items():
                op = schema["paths"].get(path, {}).get(method)
                if op is not None:
                    op["x-required-scope"] = scope
                    note = f"Needs a key with scope `{scope}`."
                    op["description"] = f"{op.get('description', '')}\n\n{note}".strip()
        return app.openapi_schema

    app.openapi = openapi


def configure_api(
    app: FastAPI, cors_origins: list[str] | None = None, max_upload_bytes: int | None = None,
) -> None:
    """The parts of the app that depend on settings. Separate from create_api because the gateway
    must define its app at import (``serve.ingress``) but gets its settings only when a replica
    is constructed; middleware can be added until the app serves its first request. Call it
    once per app."""
    if max_upload_bytes:
        app.add_middleware(UploadBodyLimit, path="/api/media/upload", max_bytes=max_upload_bytes)
    # Outside the query guard and the body limit: a refused change is recorded too.
    app.add_middleware(AuditLog)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=cors_origins, allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
        )
