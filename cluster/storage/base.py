"""What every storage backend offers (the :class:`Storage` protocol), the errors it raises and the
rule for keys."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

CHUNK = 1024 * 1024
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


@dataclass(frozen=True)
class StoredObject:
    key: str
    modified: float  # seconds since the epoch: when it was last written


class ObjectNotFound(KeyError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"object not found: {self.key}"


# Below this, local storage reports itself unavailable (health, the scheduler's claims): an upload
# or a depth map needs a few MiB, and a disk this full is one large video from ENOSPC.
MIN_FREE_BYTES = 64 * 2**20


class StorageFull(RuntimeError):
    """The store has no room for a write (a full disk or quota; MinIO's XMinioStorageFull)."""


class StorageUnavailable(RuntimeError):
    """The backend could not be reached (after its own retries): a transient error."""


def check_key(key: str) -> str:
    """Keys are generated, but check anyway: no traversal, no absolute paths, no odd bytes."""
    if not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class Storage(Protocol):
    def put(self, key: str, data: BinaryIO, content_type: str) -> int:
        """Store a stream under ``key`` (replacing it); returns the bytes written."""

    def put_bytes(self, key: str, data: bytes, content_type: str) -> int: ...

    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object; raises ObjectNotFound."""

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        """The objects whose keys start with ``prefix``."""

    def signed_url(self, key: str, expires_in: int | None = None) -> str:
        """A URL a browser can GET for ``expires_in`` seconds; raises ObjectNotFound."""

    def check(self) -> None:
        """Raise StorageUnavailable when the backend cannot be used (health checks)."""
