"""The embedded default: a real Postgres (pgserver) whose data lives under DEPTHMILL_HOME.

pgserver ships Postgres binaries in its wheel, so a laptop needs no setup. The server keeps its
data directory across restarts; a second process asking for the same directory attaches to the
running server instead of starting another.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A handle on the pgserver instance for one data directory."""

    def __init__(self, data_dir: Path, *, stop_on_exit: bool = True) -> None:
        import pgserver  # heavy import; only the embedded path needs it

        data_dir = Path(data_dir).expanduser().resolve()
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        # "stop": the server stops when the last process holding a handle exits, so a laptop is
        # not left with a stray postgres. None leaves it running for other processes (Ray workers).
        self._server = pgserver.get_server(data_dir, cleanup_mode="stop" if stop_on_exit else None)
        log.info("embedded Postgres ready at %s", data_dir)

    @property
    def url(self) -> str:
        return self._server.get_uri()

    def stop(self) -> None:
        """Release this process's handle (the server stops when no process holds one)."""
        self._server.cleanup()


def resolve_database_url(database_url: str | None, home: Path) -> tuple[str, EmbeddedPostgres | None]:
    """The URL to use: the configured server, or an embedded one started under ``home``."""
    if database_url:
        return database_url, None
    embedded = EmbeddedPostgres(home / "postgres")
    return embedded.url, embedded
