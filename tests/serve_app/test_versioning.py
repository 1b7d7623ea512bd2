"""/api/v1 is the contract and /api its alias: the same routes answer alike under both, the
middlewares apply to both spellings, and the OpenAPI document lists /api/v1."""

from __future__ import annotations

import uuid

import pytest

from serve_app.api.versioning import unversioned, versioned
from devkit import media_files


def test_the_version_is_taken_off_and_put_on_only_where_it_belongs():
    assert unversioned("/api/v1/media/x") == "/api/media/x"
    assert unversioned("/api/media") == unversioned("/api/media")
    assert unversioned("/api/v1") == "/api/v1" and unversioned("/app/x") == "/app/x"
    assert versioned("/api/media") == "/api/v1/media" and versioned("/api/v1/media") == "/api/v1/media"
    assert versioned("/openapi.json") == "/openapi.json"


def test_a_sample_of_routes_answer_identically_under_both(api):
    photo = media_files.jpeg_bytes(media_files.photo("coffee").resize((70, 50)))
    uploaded = api.post("/api/v1/media/upload", files=[("files", ("a.jpg", photo))])
    assert uploaded.status_code == 200, uploaded.text
    media_id = uploaded.json()["results"][0]["media_id"]
    for method, path in [
        ("GET", "/media"), ("GET", f"/media/status?ids={media_id}"),
        ("GET", f"/media/{media_id}/neighbours"), ("GET", "/queue/status"),
        ("GET", "/queue/summary"), ("GET", "/webhooks"),
        ("GET", f"/media/{uuid.uuid4()}"),  # 404
        ("GET", "/media?limit=0"),  # 422
        ("DELETE", f"/media/{uuid.uuid4()}"),  # 404
    ]:
        alias, stable = (api.request(method, f"{prefix}{path}") for prefix in ("/api", "/api/v1"))
        assert (stable.status_code, stable.json()) == (alias.status_code, alias.json()), path
        assert stable.headers["content-type"] == alias.headers["content-type"]
    # A change made through one is seen through the other.
    assert api.delete(f"/api/v1/media/{media_id}").status_code == 204
    assert api.get(f"/api/media/{media_id}").status_code == 404


def test_keys_and_the_upload_limit_guard_the_versioned_paths_too(make_api):
    api = make_api(api_keys="k1", max_file_size=1024, max_files_per_request=1)
    refused = api.get("/api/v1/media")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert api.get("/api/v1/media", headers={"Authorization": "Bearer k1"}).status_code == 200
    too_big = api.post("/api/v1/media/upload", headers={"Authorization": "Bearer k1"},
                       files=[("files", ("big.jpg", b"x" * (3 * 2**20)))])
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"


def test_unknown_versions_are_a_json_404(api):
    r = api.get("/api/v2/media")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_the_openapi_document_lists_v1_and_says_api_mirrors_it(api):
    doc = api.get("/openapi.json").json()
    paths = set(doc["paths"])
    assert {"/api/v1/media/upload", "/api/v1/media/{media_id}", "/api/v1/queue/status",
            "/api/v1/health", "/api/v1/files/{key}"} <= paths
    assert all(p.startswith("/api/v1/") for p in paths), sorted(paths)
    assert "`/api/...` mirrors it" in doc["info"]["description"]
    assert api.get("/openapi.json").json() == doc  # built once, not versioned twice


@pytest.mark.parametrize("path", ["/", "/app/index.html"])
def test_the_web_app_stays_where_it_is(api, path):
    assert api.get(path).status_code == 200
