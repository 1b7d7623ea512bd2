"""What the routes need, built once per gateway replica and reached through ``deps``."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cluster.media_probe import MediaLimits
from cluster.settings import Settings
from cluster.signing import UrlSigner
from cluster.storage import Storage
from db.connection import Database


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
class ApiContext:
    settings: Settings
    db: Database
    storage: Storage
    signer: UrlSigner | None
    limits: MediaLimits
    upload_limiter: RateLimiter
    depth: Any = None  # a Serve DeploymentHandle to the depth deployment
    scheduler: Any = None  # callable returning the scheduler actor handle (or None)
    version: str = "0.1.0"
    # Uploads (hash, decode-check, store, SQL) run here, not on the loop's default executor, so
    # a burst of uploads never queues health checks and reads behind it. More threads than cores:
    # decoding releases the GIL, and much of an upload is waiting on disk and Postgres commits.
    ingest_pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=8, thread_name_prefix="ingest"))


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
