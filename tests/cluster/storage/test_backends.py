"""One contract, two backends: local directory and S3 over HTTP (moto's server on loopback)."""

from __future__ import annotations

import io
import os
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.error import HTTPError
from urllib.parse import parse_qs, urlparse

import pytest

from cluster.storage import keys as storage_keys
from cluster.config.settings import Settings
from cluster.storage.signing import SignatureError, UrlSigner
from cluster.storage import (
    LocalStorage,
    ObjectNotFound,
    S3Storage,
    StorageFull,
    StorageUnavailable,
    storage_from_settings,
)


class Unsized(io.RawIOBase):
    """A stream with no length and no seek, like an HTTP request body."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        chunk = self._buf.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


def test_put_then_get_round_trips(storage):
    assert storage.put("a/b.bin", io.BytesIO(b"hello"), "application/octet-stream") == 5
    assert storage.get_bytes("a/b.bin") == b"hello"
    with storage.open("a/b.bin") as f:
        assert f.read() == b"hello"
    assert storage.exists("a/b.bin")


def test_put_streams_large_objects_in_parts(storage):
    data = os.urandom(12 * 1024 * 1024 + 17)  # over the 5 MB multipart threshold
    assert storage.put("big/object", Unsized(data), "video/mp4") == len(data)
    assert storage.get_bytes("big/object") == data


def test_put_replaces_an_existing_object(storage):
    storage.put_bytes("k", b"one", "text/plain")
    storage.put_bytes("k", b"two", "text/plain")
    assert storage.get_bytes("k") == b"two"


def test_missing_objects(storage):
    assert not storage.exists("nope")
    with pytest.raises(ObjectNotFound):
        storage.open("nope")
    with pytest.raises(ObjectNotFound):
        storage.signed_url("nope")
    storage.delete("nope")  # deleting what is not there is fine


def test_delete_and_list_by_prefix(storage):
    for key in ("p/1", "p/2", "q/1"):
        storage.put_bytes(key, b"x", "text/plain")
    assert sorted(o.key for o in storage.list("p/")) == ["p/1", "p/2"]
    storage.delete("p/1")
    assert sorted(o.key for o in storage.list("")) == ["p/2", "q/1"]
    assert [o.key for o in storage.list("q/1")] == ["q/1"]
    assert [o.key for o in storage.list("q")] == ["q/1"]
    assert list(storage.list("r/")) == []


def test_list_tells_when_each_object_was_written(storage):
    before = time.time()
    storage.put_bytes("t/1", b"x", "text/plain")
    (listed,) = storage.list("t/")
    # S3 keeps whole seconds.
    assert before - 1 <= listed.modified <= time.time() + 1


def test_local_delete_removes_the_folders_it_empties(tmp_path):
    store = LocalStorage(tmp_path / "objects", UrlSigner(b"k" * 32))
    store.put_bytes("depth/m/1/png16.png", b"x", "image/png")
    store.put_bytes("depth/m/1/preview.webp", b"x", "image/webp")
    store.put_bytes("depth/m/2/png16.png", b"x", "image/png")
    store.delete("depth/m/1/png16.png")
    assert (tmp_path / "objects/depth/m/1").is_dir()  # preview.webp is still there
    store.delete("depth/m/1/preview.webp")
    assert not (tmp_path / "objects/depth/m/1").exists()
    assert (tmp_path / "objects/depth/m/2").is_dir()
    store.delete("depth/m/2/png16.png")
    assert sorted(p.name for p in (tmp_path / "objects").iterdir()) == [".tmp"]
    store.put_bytes("depth/m/2/png16.png", b"y", "image/png")  # and the folders come back
    assert store.get_bytes("depth/m/2/png16.png") == b"y"


def test_local_puts_beside_deletes_that_empty_their_folder(tmp_path):
    """Each thread's delete empties the folder while the other's put may be between making the
    folder and renaming its file into it: every put must still land, every delete still clean."""
    store = LocalStorage(tmp_path / "objects", UrlSigner(b"k" * 32))

    def churn(thread: int) -> int:
        for n in range(1000):
            key = f"depth/m/1/{thread}-{n}.png"
            store.put_bytes(key, b"x", "image/png")
            assert store.get_bytes(key) == b"x"
            store.delete(key)
        return thread

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(churn, (0, 1))) == [0, 1]
    assert sorted(p.name for p in (tmp_path / "objects").iterdir()) == [".tmp"]


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "a//b", "", "a\x00b", "a b"])
def test_hostile_keys_are_refused(storage, key):
    with pytest.raises(ValueError):
        storage.put_bytes(key, b"x", "text/plain")


def test_check_passes_on_a_working_backend(storage):
    storage.check()


def test_s3_signed_url_downloads_and_expires(s3_endpoint):
    store = S3Storage("signed", endpoint_url=s3_endpoint)
    store.put_bytes("x/y.png", b"png-bytes", "image/png")
    with urllib.request.urlopen(store.signed_url("x/y.png", 60)) as resp:
        assert resp.read() == b"png-bytes"
    url = store.signed_url("x/y.png", 60)
    tampered = url.replace("x/y.png", "x/z.png")
    with pytest.raises(HTTPError) as err:
        urllib.request.urlopen(tampered)
    assert err.value.code in (403, 404)


def test_s3_bucket_is_created_if_missing(s3_endpoint):
    bucket = f"new-{uuid.uuid4().hex[:8]}"
    S3Storage(bucket, endpoint_url=s3_endpoint)
    S3Storage(bucket, endpoint_url=s3_endpoint)  # and exists the second time
    assert bucket in [b["Name"] for b in S3Storage(bucket, endpoint_url=s3_endpoint)
                      .client.list_buckets()["Buckets"]]


def test_local_signed_url_verifies_and_rejects_tampering(tmp_path):
    signer = UrlSigner(b"s" * 32)
    store = LocalStorage(tmp_path, signer, base_url="http://api:8000", default_expiry=60)
    store.put_bytes("depth/m/1/png16.png", b"x", "image/png")
    url = urlparse(store.signed_url("depth/m/1/png16.png"))
    assert url.path == "/api/files/depth/m/1/png16.png"
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    signer.verify("depth/m/1/png16.png", int(q["expires"]), q["signature"])
    with pytest.raises(SignatureError, match="invalid"):
        signer.verify("depth/m/2/png16.png", int(q["expires"]), q["signature"])
    with pytest.raises(SignatureError, match="invalid"):
        signer.verify("depth/m/1/png16.png", int(q["expires"]) + 1, q["signature"])
    with pytest.raises(SignatureError, match="expired"):
        signer.verify("depth/m/1/png16.png", int(q["expires"]), q["signature"],
                      now=int(q["expires"]) + 1)
    with pytest.raises(SignatureError, match="invalid"):
        UrlSigner(b"t" * 32).verify("depth/m/1/png16.png", int(q["expires"]), q["signature"])
    with pytest.raises(SignatureError, match="invalid"):  # found by schemathesis: was a 500
        signer.verify("depth/m/1/png16.png", int(q["expires"]), "Ù\x95")


def test_local_writes_are_atomic(tmp_path):
    store = LocalStorage(tmp_path, UrlSigner(b"s" * 32))

    class Exploding(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, b):
            raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        store.put("half", Exploding(), "application/octet-stream")
    assert not store.exists("half")
    assert list(store.list()) == []


def test_generated_secret_persists_under_home(tmp_path):
    a = UrlSigner.from_home(tmp_path)
    b = UrlSigner.from_home(tmp_path)
    expires, sig = a.sign("k", 60)
    b.verify("k", expires, sig)


def test_storage_from_settings_picks_the_backend(tmp_path, s3_endpoint):
    local = storage_from_settings(Settings(home=tmp_path))
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "storage"
    s3 = storage_from_settings(
        Settings(home=tmp_path, storage="s3", s3_endpoint=s3_endpoint, s3_bucket="from-settings")
    )
    assert isinstance(s3, S3Storage)
    s3.check()


def test_keys_never_contain_user_names():
    media_id = uuid.uuid4()
    assert storage_keys.original("ab" * 32, ".jpg") == f"originals/ab/{'ab' * 32}.jpg"
    assert storage_keys.depth(media_id, "depth-anything/Depth-Anything-V2-Small-hf", "png16") == (
        f"depth/depth-anything_Depth-Anything-V2-Small-hf/{media_id}/png16.png"
    )
    assert storage_keys.model_slug("../../etc") == "etc"


def test_local_storage_on_a_full_disk(small_disk):
    storage = LocalStorage(small_disk, UrlSigner(b"k" * 32))
    with pytest.raises(StorageUnavailable, match="full"):
        storage.check()  # so the scheduler stops claiming and health says why
    with pytest.raises(StorageFull):
        storage.put_bytes("originals/aa/big.bin", os.urandom(2 * 2**20), "application/octet-stream")
    assert [p for p in small_disk.rglob("*") if p.is_file()] == []  # no partial temp file
