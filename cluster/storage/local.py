"""Storage in a local directory, the embedded default: files written whole or not at all, and
URLs signed by the gateway (which serves them)."""

from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from cluster.storage.base import (
    CHUNK,
    MIN_FREE_BYTES,
    ObjectNotFound,
    StorageFull,
    StorageUnavailable,
    StoredObject,
    check_key,
)
from cluster.storage.signing import UrlSigner


class LocalStorage:
    """Objects as files under ``root``; writes go to a temp file renamed into place, so a reader
    never sees half an object and a crash leaves no partial file under a real key."""

    def __init__(
        self, root: Path, signer: UrlSigner, *, base_url: str = "", default_expiry: int = 3600
    ) -> None:
        self.root = root
        self.signer = signer
        self.base_url = base_url.rstrip("/")
        self.default_expiry = default_expiry
        self._tmp = root / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: BinaryIO, content_type: str) -> int:
        target = self.path(key)
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(data, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
                size = out.tell()
            self._rename_into_place(tmp, target)
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"no space left under {self.root} for {key}") from e
            raise
        return size

    def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        return self.put(key, io.BytesIO(data), content_type)

    def open(self, key: str) -> BinaryIO:
        try:
            return self.path(key).open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        path = self.path(key)
        path.unlink(missing_ok=True)
        self._remove_empty_dirs(path.parent)

    def _rename_into_place(self, tmp: str, target: Path) -> None:
        # A delete beside this put removes the folder whenever it looks empty: between the mkdir
        # and the rename, or inside mkdir itself (FileExistsError for a folder that was there
        # and is gone again). Make it again and rename again.
        for attempt in range(5):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
                return
            except (FileNotFoundError, FileExistsError):
                if attempt == 4 or not Path(tmp).exists():
                    raise

    def _remove_empty_dirs(self, directory: Path) -> None:
        """Remove ``directory`` and its parents below the root while they are empty, so deleted
        media leave no trail of empty folders (one per media id under depth/)."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:  # not empty (an object beside it, or a put just made it), or gone
                return
            directory = directory.parent

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        # Walk only the prefix's folder: a prefix that is one key looks at one folder.
        start = self.root / prefix.rpartition("/")[0]
        for path in sorted(start.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            if not key.startswith(prefix) or self._tmp in path.parents:
                continue
            try:
                if path.is_file():
                    yield StoredObject(key, path.stat().st_mtime)
            except FileNotFoundError:  # deleted while listing
                continue

    def signed_url(self, key: str, expires_in: int | None = None) -> str:
        if not self.exists(key):
            raise ObjectNotFound(key)
        expires, signature = self.signer.sign(key, expires_in or self.default_expiry)
        return f"{self.base_url}/api/files/{quote(key)}?expires={expires}&signature={signature}"

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageUnavailable(f"storage directory {self.root} is not writable")
        free = shutil.disk_usage(self.root).free
        if free < MIN_FREE_BYTES:
            # Unavailable rather than full: the scheduler stops claiming until space is freed,
            # instead of spending every item's attempts on writes that cannot succeed.
            raise StorageUnavailable(
                f"storage directory {self.root} is full ({free // 2**20} MiB free)")
