"""The HTTP gateway: the FastAPI app as a Serve ingress deployment holding a handle to the depth
deployment."""

from __future__ import annotations

from ray import serve
from ray.serve.handle import DeploymentHandle

from cluster.cpu_priority import FOREGROUND_ENV
from cluster.media_probe import MediaLimits
from cluster.settings import Settings
from cluster.storage import LocalStorage, storage_from_settings
from db.connection import Database
from serve_app.api.context import ApiContext, RateLimiter, install
from serve_app.api.main import create_api

# CORS origins are read at import: Serve imports this module in each replica, with the
# replica's DEPTHMILL_* environment.
_import_settings = Settings()
api = create_api(_import_settings.cors_origins, _import_settings.max_upload_bytes)


def build_context(
    settings: Settings, depth: DeploymentHandle | None = None, scheduler=None, *, replicas: int = 1,
) -> ApiContext:
    storage = storage_from_settings(settings)
    signer = storage.signer if isinstance(storage, LocalStorage) else None
    # Short waits: during an outage a request should get its 503 in seconds, not minutes.
    db = Database(settings.database_url, max_size=settings.db_pool_size, name="gateway",
                  timeout=3, retries=2).open()
    return ApiContext(
        settings=settings, db=db, storage=storage, signer=signer,
        limits=MediaLimits.from_settings(settings),
        # Each replica keeps its own buckets and the proxy spreads a client's requests over them,
        # so each allows its share of the rate.
        upload_limiter=RateLimiter(settings.upload_rate_per_minute / replicas),
        depth=depth, scheduler=scheduler,
    )


def _scheduler_handle():
    from cluster.scheduler import get_scheduler

    return get_scheduler()


# Serve's own settings for a replica whose requests are many and cheap (Ray's "throughput
# optimized" set, without direct ingress, which would take the gateway off its port). The app
# runs on the replica's event loop instead of a loop in a thread of its own: every ASGI message
# of a request (a 2 MB upload is dozens) crosses no thread. It may: nothing in it blocks the loop
# (ingest, the database and storage run in threads). Access-log lines are written in batches.
_GATEWAY_SERVE_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
}


# Many uploads and reads in flight at once; this must never cap the depth batches either.
@serve.deployment(name="Gateway", max_ongoing_requests=256, ray_actor_options={
    "num_cpus": 0.25, "runtime_env": {"env_vars": FOREGROUND_ENV | _GATEWAY_SERVE_ENV}})
@serve.ingress(api)
class Gateway:
    def __init__(self, depth: DeploymentHandle, settings: Settings) -> None:
        install(build_context(settings, depth, _scheduler_handle,
                              replicas=settings.gateway_replicas))


