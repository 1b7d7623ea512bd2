"""The FastAPI application: routers, error handlers, CORS and API keys. No I/O here; the gateway
deployment (or a test) attaches an ApiContext to ``app.state.ctx``."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from serve_app.api import errors, log_redact
from serve_app.api.body_limit import UploadBodyLimit
from serve_app.api.deps import require_api_key
from serve_app.api.event_schemas import install_event_docs
from serve_app.api.query_guard import RefuseNulInQuery
from serve_app.api.routes import events, files, health, media, models, queue, stereo, webhooks
from serve_app.web.pages import install_web_app

DESCRIPTION = """Turn photos and videos into depth maps. Upload media, watch the queue, fetch
depth maps through signed URLs. With API keys configured, send `Authorization: Bearer <key>`. Live events: GET /api/events
(Server-Sent Events); each event type's body is in the `webhooks` section."""


def create_api(cors_origins: list[str] | None = None, max_upload_bytes: int | None = None) -> FastAPI:
    app = FastAPI(title="depthmill", version="0.1.0", description=DESCRIPTION)
    errors.install(app)
    app.add_middleware(RefuseNulInQuery)
    configure_api(app, cors_origins, max_upload_bytes)
    protected = [Depends(require_api_key)]
    # Every protected route can answer a bad key, bad parameters and a database outage.
    common = errors.documented(401, 422, 503)
    app.include_router(media.router, dependencies=protected, responses=common)
    app.include_router(queue.router, dependencies=protected, responses=common)
    app.include_router(stereo.router, dependencies=protected, responses=common)
    app.include_router(webhooks.router, dependencies=protected, responses=common)
    app.include_router(models.router, dependencies=protected, responses=common)
    # A key or, for the stream only, a token from POST /api/events/token (EventSource sends no
    # headers); each route says which.
    app.include_router(events.router)
    install_event_docs(app)
    log_redact.install()
    app.include_router(health.router)  # open: load balancers and monitors probe it
    app.include_router(files.router, responses=errors.documented(403, 404, 422))  # signed
    install_web_app(app)
    return app


def configure_api(
    app: FastAPI, cors_origins: list[str] | None = None, max_upload_bytes: int | None = None,
) -> None:
    """The parts of the app that depend on settings. Separate from create_api because the gateway
    must define its app at import (``serve.ingress``) but gets its settings only when a replica
    is constructed; middleware can be added until the app serves its first request."""
    if max_upload_bytes:
        app.add_middleware(UploadBodyLimit, path="/api/media/upload", max_bytes=max_upload_bytes)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=cors_origins, allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
        )
