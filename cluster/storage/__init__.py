"""Object storage, once: a local directory (the embedded default) or S3 through boto3.

The gateway, the processing tasks and the Ray Data pipelines all use :func:`storage_from_settings`
and the :class:`Storage` interface; nothing else touches files or boto3. Keys come from
:mod:`cluster.storage.keys` (ids and hashes), never from user file names.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cluster.config.settings import Settings
from cluster.storage.base import (
    CHUNK,
    ObjectNotFound,
    Storage,
    StorageFull,
    StorageUnavailable,
    StoredObject,
    check_key,
)
from cluster.storage.local import LocalStorage
from cluster.storage.s3 import S3Storage
from cluster.storage.signing import UrlSigner

__all__ = [
    "LocalStorage", "ObjectNotFound", "S3Storage", "Storage", "StorageFull", "StorageUnavailable",
    "StoredObject", "check_key", "download", "server_signer", "storage_from_settings",
]


def download(storage: Storage, key: str, path: Path) -> Path:
    """Copy the object at ``key`` to the local file ``path`` (for readers that need a file, as
    PyAV does to seek in a video), a chunk at a time."""
    with storage.open(key) as src, path.open("wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)
    return path


def server_signer(settings: Settings) -> UrlSigner:
    """The installation's signer: DEPTHMILL_SIGNING_SECRET, else the secret kept under HOME.
    Signed URLs, event tokens and API key hashes all derive from it."""
    secret = settings.signing_secret.get_secret_value() if settings.signing_secret else None
    return UrlSigner.from_home(settings.home, secret)


def storage_from_settings(settings: Settings, *, base_url: str | None = None) -> Storage:
    if settings.storage == "s3":
        return S3Storage(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint,
            region=settings.s3_region,
            default_expiry=settings.signed_url_expiry,
            sse=settings.s3_sse,
            sse_kms_key_id=settings.s3_sse_kms_key_id,
        )
    return LocalStorage(
        settings.storage_dir,
        server_signer(settings),
        base_url=base_url if base_url is not None else settings.api_url,
        default_expiry=settings.signed_url_expiry,
    )
