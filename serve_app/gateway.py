"""The HTTP gateway: the FastAPI app as a Serve ingress deployment holding a handle to the depth
deployment."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import ray
import uvicorn
from ray import serve
from ray.serve.config import HTTPOptions
from ray.serve.handle import DeploymentHandle

from cluster.config.worker_env import FOREGROUND_ENV
from cluster.media import configure_pillow
from cluster.media.probe import MediaLimits
from cluster.config.names import GATEWAY_DEPLOYMENT, NAMESPACE, SCHEDULER_ACTOR, WEBHOOK_ACTOR
from cluster.config.settings import Settings
from cluster.storage import LocalStorage, server_signer, storage_from_settings
from cluster.work.stereo_video import render_task
from db.connection import Database
from serve_app.api.context import ApiContext, RateLimiter, install
from serve_app.api.event_tokens import EventTokens
from serve_app.api.event_wake import EventWake
from serve_app.api.key_cache import KeyCache
from serve_app.api.main import configure_api, create_api

log = logging.getLogger("depthmill.gateway")

# Routes only: what depends on settings is added when a replica is built with them (Gateway).
api = create_api(configure=False)


def build_context(
    settings: Settings, depth: DeploymentHandle | None = None, scheduler=None, deliverer=None, *,
    replicas: int = 1, start_video_render=None,
) -> ApiContext:
    storage = storage_from_settings(settings)
    signer = storage.signer if isinstance(storage, LocalStorage) else None
    # Event tokens use the signing secret whichever storage there is (S3 signs its own URLs).
    token_signer = signer or server_signer(settings)
    key_secret = token_signer.api_key_secret()
    # Short waits: during an outage a request should get its 503 in seconds, not minutes.
    db = Database(settings.database_url, max_size=settings.db_pool_size, name="gateway",
                  timeout=3, retries=2).open()
    return ApiContext(
        settings=settings, db=db, storage=storage, signer=signer,
        limits=MediaLimits.from_settings(settings),
        # Each replica keeps its own buckets and the proxy spreads a client's requests over them,
        # so each allows its share of the rate.
        upload_limiter=RateLimiter(settings.upload_rate_per_minute / replicas),
        event_tokens=EventTokens(token_signer, settings.events_token_seconds),
        event_wake=EventWake(db, settings.events_poll_s),
        keys=KeyCache(db, key_secret, settings.api_key_cache_s), key_secret=key_secret,
        depth=depth, scheduler=scheduler, deliverer=deliverer,
        start_video_render=start_video_render,
    )


def _actor(name: str):
    # By name: the gateway has no business importing the scheduler's or the deliverer's code.
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def _scheduler_handle():
    return _actor(SCHEDULER_ACTOR)


def _deliverer_handle():
    return _actor(WEBHOOK_ACTOR)


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


_GATEWAY_ACTOR_OPTIONS = {
    "num_cpus": 0.25, "runtime_env": {"env_vars": FOREGROUND_ENV | _GATEWAY_SERVE_ENV}}


def gateway_actor_options(settings: Settings) -> dict:
    """The replicas' Ray options: the deployment's own, and the custom resources that put them
    on the nodes a load balancer sends the port's traffic to."""
    return {**_GATEWAY_ACTOR_OPTIONS, "resources": dict(settings.gateway_resources)}


# Many uploads and reads in flight at once; this must never cap the depth batches either.
@serve.deployment(name=GATEWAY_DEPLOYMENT, max_ongoing_requests=256,
                  ray_actor_options=_GATEWAY_ACTOR_OPTIONS)
@serve.ingress(api)
class Gateway:
    def __init__(self, depth: DeploymentHandle, settings: Settings) -> None:
        configure_pillow()
        configure_api(api, settings.cors_origins, settings.max_upload_bytes)
        direct = settings.gateway_direct_ingress
        # A client's connection stays with the process it landed on, so with direct ingress a
        # replica cannot count on a share of the client's requests: each allows the full rate.
        install(build_context(settings, depth, _scheduler_handle, _deliverer_handle,
                              replicas=1 if direct else settings.gateway_replicas,
                              start_video_render=lambda job: render_task.remote(job, settings)))
        self._direct = _serve_directly(settings) if direct else None


class _ReplicaServer(uvicorn.Server):
    def capture_signals(self):
        return contextlib.nullcontext()  # the process is Ray's: so are its signals


def _serve_directly(settings: Settings) -> asyncio.Task | None:
    """Serve the app from this replica on the gateway's own port, beside any Serve proxy there.

    Through Serve's proxy an upload costs a second process: the proxy reads the body and the
    replica pulls it over in pickled batches. On two cores that halved the uploads per second
    (README, Load).
    Sockets bound with SO_REUSEPORT (the proxy binds its port so too) share the port and the
    kernel spreads new connections over them, so the replicas listen on the port users know;
    `depthmill up` starts Serve without proxies, and replicas alone listen. (Serve's own direct
    ingress gives each replica a port of its own.) The socket is bound here, before the replica
    is reported ready, so no connection is refused in between. If the port cannot be shared, the
    replica serves through the proxy only.
    """
    host, port = settings.host, settings.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        log.warning("gateway: port %s:%s cannot be shared (%s); serving through the Serve proxy "
                    "only", host, port, e)
        return None
    server = _ReplicaServer(uvicorn.Config(
        api, lifespan="off", access_log=False, log_config=None,
        ssl_certfile=settings.tls_certfile, ssl_keyfile=settings.tls_keyfile,
        timeout_keep_alive=HTTPOptions().keep_alive_timeout_s))
    # Kept by the replica: the loop holds tasks only weakly.
    return asyncio.get_event_loop().create_task(server.serve(sockets=[sock]))
