"""/api/files/{key}: local storage's objects behind signed URLs, without Ray."""

from __future__ import annotations

import time
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest

KEY = "thumbnails/00000000-0000-0000-0000-000000000001.webp"


def path_of(api, url: str) -> str:
    return url.removeprefix(api.ctx.storage.base_url)


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_a_signed_url_serves_the_object(api):
    api.ctx.storage.put_bytes(KEY, b"the thumbnail", "image/webp")
    url = api.ctx.storage.signed_url(KEY)
    r = api.get(path_of(api, url))
    assert r.status_code == 200 and r.content == b"the thumbnail"


def test_a_url_needs_expires_and_signature(api):
    api.ctx.storage.put_bytes(KEY, b"x", "image/webp")
    q = query_of(api.ctx.storage.signed_url(KEY))
    for missing in ("expires", "signature"):
        params = {k: v for k, v in q.items() if k != missing}
        r = api.get(f"/api/files/{KEY}", params=params)
        assert r.status_code == 422, missing


def test_a_wrong_signature_is_forbidden(api):
    api.ctx.storage.put_bytes(KEY, b"x", "image/webp")
    q = query_of(api.ctx.storage.signed_url(KEY))
    bad = api.get(f"/api/files/{KEY}", params={**q, "signature": "0" * 64})
    assert bad.status_code == 403 and bad.json()["error"]["code"] == "forbidden"
    other_key = KEY.replace("1.webp", "2.webp")
    api.ctx.storage.put_bytes(other_key, b"y", "image/webp")
    # A signature is for one key: it opens no other object.
    assert api.get(f"/api/files/{other_key}", params=q).status_code == 403


def test_an_expired_url_is_forbidden(api):
    api.ctx.storage.put_bytes(KEY, b"x", "image/webp")
    expires, signature = api.ctx.signer.sign(KEY, 60, now=time.time() - 3600)
    r = api.get(f"/api/files/{KEY}", params={"expires": expires, "signature": signature})
    assert r.status_code == 403 and "expired" in r.json()["error"]["message"]


def test_a_signed_url_of_a_deleted_object_is_a_404(api):
    api.ctx.storage.put_bytes(KEY, b"x", "image/webp")
    url = api.ctx.storage.signed_url(KEY)
    api.ctx.storage.delete(KEY)
    r = api.get(path_of(api, url))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


# The client would resolve a literal ".." before sending; encoded, it reaches the route as is.
@pytest.mark.parametrize(("sent", "key"), [
    ("%2E%2E/secret", "../secret"),
    ("thumbnails/%2E%2E/%2E%2E/etc/passwd", "thumbnails/../../etc/passwd"),
    (".tmp/x", ".tmp/x"),
    ("thumbnails//x.webp", "thumbnails//x.webp"),
])
def test_keys_outside_the_store_are_forbidden_even_signed(api, sent, key):
    (api.ctx.storage.root.parent / "secret").write_text("not for you")
    expires, signature = api.ctx.signer.sign(key, 60)
    r = api.get(f"/api/files/{sent}", params={"expires": expires, "signature": signature})
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "forbidden"


def test_the_files_route_needs_no_api_key(make_api):
    api = make_api(api_keys="secret-key")
    api.ctx.storage.put_bytes(KEY, b"x", "image/webp")
    assert api.get(path_of(api, api.ctx.storage.signed_url(KEY))).status_code == 200


def test_with_an_object_store_files_are_not_served_here(api):
    api.ctx.storage.put_bytes(KEY, b"x", "image/webp")
    url = api.ctx.storage.signed_url(KEY)
    api.client.app.state.ctx = replace(api.ctx, signer=None)  # what S3 storage gives
    r = api.get(path_of(api, url))
    assert r.status_code == 404 and "object store" in r.json()["error"]["message"]
