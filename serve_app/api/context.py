"""What the routes need, built once per gateway replica and reached through ``deps``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cluster.media.probe import MediaLimits
from cluster.config.settings import Settings
from cluster.storage.signing import UrlSigner
from cluster.storage import Storage
from db.connection import Database
from serve_app.api.event_tokens import EventTokens
from serve_app.api.event_wake import EventWake
from serve_app.api.key_cache import KeyCache


@dataclass
class RateLimiter:
    """A token bucket per client: ``per_minute`` requests, refilled continuously."""

    per_minute: float
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, client: str) -> float:
        """0 when allowed, else the seconds until a token is free."""
        now = time.monotonic()
        rate = self.per_minute / 60.0
        tokens, last = self.buckets.get(client, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * rate)
        if tokens >= 1:
            self.buckets[client] = (tokens - 1, now)
            return 0.0
        self.buckets[client] = (tokens, now)
        return (1 - tokens) / rate


@dataclass
class SharedAnswer:
    """The answer of an async check, reused for ``ttl_s`` after it arrives; callers that come
    while a check runs wait for that one instead of starting their own."""

    ttl_s: float
    _value: Any = None
    _at: float = float("-inf")
    _running: asyncio.Future | None = None

    async def get(self, compute: Callable[[], Awaitable[Any]]) -> Any:
        if time.monotonic() - self._at < self.ttl_s:
            return self._value
        running = self._running
        # A check started on another event loop (a test's earlier client) cannot be awaited here.
        if running is None or running.get_loop() is not asyncio.get_running_loop():
            running = self._running = asyncio.ensure_future(self._refresh(compute))
        # Shielded: a caller that disconnects must not cancel the check the others wait for.
        return await asyncio.shield(running)

    async def latest(self, compute: Callable[[], Awaitable[Any]], *,
                     max_age_s: float = float("inf")) -> tuple[Any, float]:
        """The last answer and its age in seconds, at once; when it is older than ``ttl_s`` a
        fresh check starts in the background. Only the very first caller waits, and callers
        when the answer is older than ``max_age_s``. For checks that can take seconds under
        load: a health probe must not."""
        age = time.monotonic() - self._at
        if self._at == float("-inf") or age > max_age_s:
            return await self.get(compute), 0.0  # just answered
        running = self._running
        if age >= self.ttl_s and (running is None
                                  or running.get_loop() is not asyncio.get_running_loop()):
            self._running = asyncio.ensure_future(self._refresh(compute))  # held: loops hold weakly
        return self._value, age

    async def _refresh(self, compute: Callable[[], Awaitable[Any]]) -> Any:
        try:
            self._value = await compute()
            self._at = time.monotonic()
            return self._value
        finally:
            self._running = None


# Health is polled by load balancers, dashboards and `depthmill status` at once, and a full check
# asks the scheduler actor and the depth replica (under load, most of a second): one check a
# second per replica serves them all.
HEALTH_CACHE_S = 1.0
# The scheduler actor and the depth replica are asked in the background at most this often; a
# health answer carries their last known state and its age.
DEPENDENCY_REFRESH_S = 2.0


@dataclass
class ApiContext:
    settings: Settings
    db: Database
    storage: Storage
    signer: UrlSigner | None
    limits: MediaLimits
    upload_limiter: RateLimiter
    event_tokens: EventTokens | None = None  # for /api/events?token=
    event_wake: EventWake | None = None  # the replica's one LISTEN connection, for its streams
    keys: KeyCache | None = None  # the API keys of the database (serve_app/api/auth.py)
    key_secret: bytes | None = None  # what key hashes are made with, for POST /api/keys
    depth: Any = None  # a Serve DeploymentHandle to the depth deployment
    scheduler: Any = None  # callable returning the scheduler actor handle (or None)
    deliverer: Any = None  # callable returning the webhook deliverer's handle (or None)
    # Starts a stereo video render in the background (a Ray task in the gateway); None: this
    # API cannot render videos, and says so.
    start_video_render: Callable[[Any], None] | None = None
    version: str = "0.1.0"
    # Uploads (hash, decode-check, store, SQL) run here, not on the loop's default executor, so
    # a burst of uploads never queues health checks and reads behind it. More threads than cores:
    # decoding releases the GIL, and much of an upload is waiting on disk and Postgres commits.
    ingest_pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=8, thread_name_prefix="ingest"))
    health: SharedAnswer = field(default_factory=lambda: SharedAnswer(HEALTH_CACHE_S))
    depth_state: SharedAnswer = field(default_factory=lambda: SharedAnswer(DEPENDENCY_REFRESH_S))
    scheduler_state: SharedAnswer = field(
        default_factory=lambda: SharedAnswer(DEPENDENCY_REFRESH_S))
    deliverer_state: SharedAnswer = field(
        default_factory=lambda: SharedAnswer(DEPENDENCY_REFRESH_S))


# Serve ships the ingress FastAPI app to each replica by value, so the app object the replica
# serves is not the one its constructor can reach; the constructor installs the context here
# (one replica per process) and ``deps.get_context`` falls back to it.
_installed: list[ApiContext] = []


def install(ctx: ApiContext) -> None:
    _installed[:] = [ctx]


def installed() -> ApiContext:
    if not _installed:
        raise RuntimeError("no API context installed in this process")
    return _installed[0]
