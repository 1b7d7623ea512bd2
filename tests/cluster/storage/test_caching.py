"""S3's presigned URLs answer with the same caching as local storage's: Cache-Control until the
URL expires (originals immutable), S3's own ETag and 304s."""

from __future__ import annotations

import urllib.request
import uuid
from urllib.error import HTTPError

import pytest

from cluster.storage import S3Storage

ORIGINAL = "originals/ab/" + "ab" * 32 + ".jpg"
DEPTH = "depth/tiny/00000000-0000-0000-0000-000000000001/png16.png"


@pytest.mark.parametrize("key, immutable", [(ORIGINAL, True), (DEPTH, False)])
def test_a_presigned_url_says_how_long_it_may_be_cached(s3_endpoint, key, immutable):
    storage = S3Storage(f"cache-{uuid.uuid4().hex[:12]}", endpoint_url=s3_endpoint)
    storage.put_bytes(key, b"object", "image/png")
    url = storage.signed_url(key, expires_in=600)
    with urllib.request.urlopen(url) as first:
        control, etag = first.headers["Cache-Control"], first.headers["ETag"]
    assert control == "public, max-age=600" + (", immutable" if immutable else "")
    with pytest.raises(HTTPError) as not_modified:
        urllib.request.urlopen(urllib.request.Request(url, headers={"If-None-Match": etag}))
    assert not_modified.value.code == 304
