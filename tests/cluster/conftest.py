from __future__ import annotations

import uuid

import pytest

from cluster.storage.signing import UrlSigner
from cluster.storage import LocalStorage, S3Storage
from devkit.s3 import moto_s3_server


@pytest.fixture(scope="session")
def s3_endpoint():
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path, s3_endpoint):
    """Each test once per backend: a local directory and S3 over HTTP (moto's server)."""
    if request.param == "local":
        return LocalStorage(tmp_path / "objects", UrlSigner(b"k" * 32), base_url="http://api")
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    return S3Storage(bucket, endpoint_url=s3_endpoint, multipart_threshold=5 * 1024 * 1024)
