"""Which Postgres this process talks to: the configured one, or the embedded one under HOME."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cluster.config.settings import Settings
from db.embedded import resolve_database_url


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """Yield a connection URL; an embedded server started for it is released on exit."""
    url, embedded = resolve_database_url(settings.database_url, settings.home)
    try:
        yield url
    finally:
        if embedded is not None:
            embedded.stop()
