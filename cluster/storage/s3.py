"""Storage in S3 or any S3-compatible server (MinIO) through boto3."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from cluster.storage.base import (
    CHUNK,
    ObjectNotFound,
    StorageFull,
    StorageUnavailable,
    StoredObject,
    check_key,
)
from cluster.storage.caching import cache_control


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


def encryption_args(sse: str, kms_key_id: str | None = None) -> dict[str, str]:
    """The server-side encryption parameters of a write (``DEPTHMILL_S3_SSE``): none when off,
    so the bucket's own default applies."""
    if sse == "off":
        return {}
    if sse not in ("AES256", "aws:kms"):
        raise ValueError(f"unknown S3 server-side encryption {sse!r}: AES256, aws:kms or off")
    args = {"ServerSideEncryption": sse}
    if kms_key_id:
        args["SSEKMSKeyId"] = kms_key_id
    return args


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
        sse: str = "off",
        sse_kms_key_id: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.default_expiry = default_expiry
        self.encryption = encryption_args(sse, sse_kms_key_id)
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

    def write_args(self, content_type: str) -> dict[str, str]:
        """What every object this project writes carries: its type and the encryption setting
        (boto3's ExtraArgs for uploads, the same names as put_object's parameters). The one
        place writes get them, so that no write path forgets the encryption."""
        return {"ContentType": content_type, **self.encryption}

    def put(self, key: str, data: BinaryIO, content_type: str) -> int:
        counter = _CountingReader(data)
        with _s3_errors_as_storage_errors(self.bucket):
            # Multipart uploads carry the ExtraArgs on CreateMultipartUpload: the parts and the
            # assembled object are encrypted alike.
            self.client.upload_fileobj(
                counter, self.bucket, check_key(key),
                ExtraArgs=self.write_args(content_type), Config=self.transfer,
            )
        return counter.count

    def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        with _s3_errors_as_storage_errors(self.bucket):
            self.client.put_object(
                Bucket=self.bucket, Key=check_key(key), Body=data, **self.write_args(content_type)
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
        expires_in = expires_in or self.default_expiry
        # S3 answers a presigned GET with the Cache-Control it names (and its own ETag and 304s),
        # so the answer says how long it may be kept: no longer than the URL is valid.
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key,
                    "ResponseCacheControl": cache_control(key, expires_in)},
            ExpiresIn=expires_in,
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
