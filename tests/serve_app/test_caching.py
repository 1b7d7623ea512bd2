"""File answers carry ETag and Cache-Control (originals immutable, everything good until its URL
expires), conditional requests get 304, and redirects to signed URLs say how long they last."""

from __future__ import annotations

import time
import uuid
from urllib.parse import parse_qs, urlsplit

from cluster.storage import keys as storage_keys
from db import media
from tests.serve_app.test_routes_media import distinct_photo, upload
from tests.serve_app.test_routes_stereo import processed_photo

THUMB = "thumbnails/00000000-0000-0000-0000-000000000001.webp"


def path_of(api, url: str) -> str:
    return url.removeprefix(api.ctx.storage.base_url)


def max_age(cache_control: str) -> int:
    return int(next(p for p in cache_control.split(", ") if p.startswith("max-age="))[8:])


def test_an_original_is_immutable_its_etag_is_its_hash_and_a_match_is_a_304(api):
    (result,) = upload(api, ("o.jpg", distinct_photo(21)))["results"]
    item = api.ctx.db.run(media.get, uuid.UUID(result["media_id"]))
    url = path_of(api, api.ctx.storage.signed_url(item.storage_key))
    first = api.get(url)
    assert first.status_code == 200
    assert first.headers["etag"] == f'"{item.sha256}"'
    control = first.headers["cache-control"]
    assert control.startswith("public, ") and control.endswith(", immutable")
    assert 0 < max_age(control) <= api.ctx.settings.signed_url_expiry
    for tag in (first.headers["etag"], f'W/{first.headers["etag"]}', f'"x", {first.headers["etag"]}', "*"):
        again = api.get(url, headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b"", tag
        assert again.headers["etag"] == first.headers["etag"]
        assert again.headers["cache-control"].endswith(", immutable")
        assert max_age(control) - 1 <= max_age(again.headers["cache-control"]) <= max_age(control)
    assert api.get(url, headers={"If-None-Match": '"something else"'}).status_code == 200


def test_the_cache_lifetime_is_what_is_left_of_the_urls(api):
    api.ctx.storage.put_bytes(THUMB, b"thumb", "image/webp")
    url = path_of(api, api.ctx.storage.signed_url(THUMB, expires_in=120))
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    control = api.get(url).headers["cache-control"]
    assert "immutable" not in control  # rewritten in place when the media is processed again
    assert expires - time.time() - 2 <= max_age(control) <= 120


def test_a_rewritten_object_gets_a_new_etag_and_the_old_one_no_304(api):
    api.ctx.storage.put_bytes(THUMB, b"first", "image/webp")
    url = path_of(api, api.ctx.storage.signed_url(THUMB))
    old = api.get(url).headers["etag"]
    assert api.get(url, headers={"If-None-Match": old}).status_code == 304
    api.ctx.storage.put_bytes(THUMB, b"second, longer", "image/webp")
    fresh = api.get(url, headers={"If-None-Match": old})
    assert fresh.status_code == 200 and fresh.content == b"second, longer"
    assert fresh.headers["etag"] != old


def test_a_conditional_request_with_a_bad_signature_is_still_a_403(api):
    api.ctx.storage.put_bytes(THUMB, b"x", "image/webp")
    url = path_of(api, api.ctx.storage.signed_url(THUMB))
    etag = api.get(url).headers["etag"]
    forged = url.split("signature=")[0] + "signature=" + "0" * 64
    r = api.get(forged, headers={"If-None-Match": etag})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_redirects_to_signed_urls_are_cached_for_less_than_the_urls_last(api):
    (result,) = upload(api, ("r.jpg", distinct_photo(22)))["results"]
    media_id = uuid.UUID(result["media_id"])
    processed_photo(api, media_id)
    r = api.get(f"/api/v1/media/{media_id}/depth", follow_redirects=False)
    assert r.status_code == 307
    assert storage_keys.depth(media_id, "tiny", "png16") in r.headers["location"]
    control = r.headers["cache-control"]
    assert control.startswith("private, ")
    assert max_age(control) == api.ctx.settings.signed_url_expiry // 2
    stereo = api.get(f"/api/media/{media_id}/stereo", follow_redirects=False)
    assert stereo.status_code == 307 and stereo.headers["cache-control"] == control
