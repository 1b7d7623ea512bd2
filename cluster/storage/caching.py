"""What caches may do with the answer to a signed URL (both backends say the same).

The URL carries its signature and expiry, and a cache keys on the whole URL: only a holder of
that URL is ever served the copy, so a shared cache (a CDN) may keep it as long as the URL is
valid, and no longer, since a stale URL must stop working. An original's key is its content's
hash, so its copy never goes out of date (``immutable``: not even revalidated on reload); other
objects can be rewritten under the same key by reprocessing, and their ETag tells a cache when.
"""

from __future__ import annotations

from cluster.storage import keys


def cache_control(key: str, max_age: int) -> str:
    """``Cache-Control`` for the object at ``key`` served through a URL valid ``max_age`` more
    seconds."""
    value = f"public, max-age={max(0, int(max_age))}"
    return value + ", immutable" if keys.content_addressed(key) else value


def redirect_max_age(url_lifetime: int) -> int:
    """How long a redirect to a freshly signed URL may be cached: half the URL's lifetime, so a
    client that follows a cached redirect still gets a URL with half its lifetime left (enough
    to play a video through)."""
    return url_lifetime // 2
