"""Object storage, once: a local directory (the embedded default) or S3 through boto3.

The gateway, the processing tasks and the Ray Data pipelines all use :func:`storage_from_settings`
and the :class:`Storage` interface; nothing else touches files or boto3. Keys come from
:mod:`cluster.storage.keys` (ids and hashes), never from user file names.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from cluster.config.settings import Settings
from cluster.storage.signing import UrlSigner

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


@contextmanager
def _s3_errors_as_storage_errors(bucket: str) -> Iterator[None]:
    """Connection failures and server errors that outlived botocore's retries mean the backend is
    down, not that the request was wrong: callers wait and retry instead of failing the item."""
    try:
        yield
    except (BotoConnectionError, HTTPClientError) as e:
        raise StorageUnavailable(f"S3 bucket {bucket!r} unreachable: {e}") from e
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("XMinioStorageFull", "InsufficientStorage"):
            raise StorageFull(f"S3 bucket {bucket!r} has no space left: {e}") from e
        if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
            raise StorageUnavailable(f"S3 bucket {bucket!r} failing: {e}") from e
        raise


class S3Storage:
    """S3 or any S3-compatible server (MinIO) through boto3, with botocore's adaptive retries."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        default_expiry: int = 3600,
        multipart_threshold: int = 16 * CHUNK,
        max_attempts: int = 5,
        create_bucket: bool = True,
    ) -> None:
        self.bucket = bucket
        self.default_expiry = default_expiry
        config = Config(
            retries={"mode": "adaptive", "max_attempts": max_attempts},
            connect_timeout=5,
            read_timeout=60,
            signature_version="s3v4",
            # Path-style addressing works with MinIO and moto behind any hostname.
            s3={"addressing_style": "path"},
        )
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_threshold
        )
        if create_bucket:
            self._ensure_bucket(region)

    def _ensure_bucket(self, region: str) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as e:
            if e.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
                raise
        kwargs: dict = {"Bucket": self.bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**kwargs)
        except ClientError as e:
            if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def put(self, key: str, data: BinaryIO, content_type: str) -> int:
        counter = _CountingReader(data)
        with _s3_errors_as_storage_errors(self.bucket):
            self.client.upload_fileobj(
                counter, self.bucket, check_key(key),
                ExtraArgs={"ContentType": content_type}, Config=self.transfer,
            )
        return counter.count

    def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        with _s3_errors_as_storage_errors(self.bucket):
            self.client.put_object(
                Bucket=self.bucket, Key=check_key(key), Body=data, ContentType=content_type
            )
        return len(data)

    def open(self, key: str) -> BinaryIO:
        try:
            with _s3_errors_as_storage_errors(self.bucket):
                return self.client.get_object(Bucket=self.bucket, Key=check_key(key))["Body"]
        except ClientError as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                raise ObjectNotFound(key) from None
            raise

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as body, _s3_errors_as_storage_errors(self.bucket):
            return body.read()

    def exists(self, key: str) -> bool:
        try:
            with _s3_errors_as_storage_errors(self.bucket):
                self.client.head_object(Bucket=self.bucket, Key=check_key(key))
            return True
        except ClientError as e:
            if e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def delete(self, key: str) -> None:
        with _s3_errors_as_storage_errors(self.bucket):
            self.client.delete_object(Bucket=self.bucket, Key=check_key(key))

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        with _s3_errors_as_storage_errors(self.bucket):
            for page in pages:
                for obj in page.get("Contents", []):
                    yield StoredObject(obj["Key"], obj["LastModified"].timestamp())

    def signed_url(self, key: str, expires_in: int | None = None) -> str:
        # Presigning never touches the network; check first so that a URL always works.
        if not self.exists(key):
            raise ObjectNotFound(key)
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=expires_in or self.default_expiry,
        )

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as e:  # any failure means the backend is unusable right now
            raise StorageUnavailable(f"S3 bucket {self.bucket!r} unreachable: {e}") from e


class _CountingReader:
    """Counts the bytes boto3 pulls through a stream (its upload does not report a size)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size)
        self.count += len(chunk)
        return chunk


def storage_from_settings(settings: Settings, *, base_url: str | None = None) -> Storage:
    if settings.storage == "s3":
        return S3Storage(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint,
            region=settings.s3_region,
            default_expiry=settings.signed_url_expiry,
        )
    secret = settings.signing_secret.get_secret_value() if settings.signing_secret else None
    return LocalStorage(
        settings.storage_dir,
        UrlSigner.from_home(settings.home, secret),
        base_url=base_url if base_url is not None else settings.api_url,
        default_expiry=settings.signed_url_expiry,
    )
