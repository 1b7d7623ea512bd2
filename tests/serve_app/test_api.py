"""The FastAPI app with a real database and local storage, without Ray: keys, limits, errors."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from cluster.config.settings import Settings
from db import keys
from serve_app.api.main import create_api
from serve_app.gateway import build_context
from devkit import media_files

OPEN = ("/api/v1/health", "/api/v1/ai/health", "/api/v1/ai/info", "/api/v1/files/{key}")
# Answered with a stream that never ends, which a TestClient reads whole: its key check is
# below, its answer with one in tests/serve_app/test_routes_events.py.
ENDLESS = {("GET", "/api/v1/events")}


def make_client(database_url, tmp_path, **overrides) -> TestClient:
    settings = Settings(home=tmp_path, database_url=database_url, model="tiny", **overrides)
    app = create_api(settings.cors_origins, settings.max_upload_bytes)
    app.state.ctx = build_context(settings)
    return TestClient(app)


def routes(client) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    return [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops]


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


def test_every_route_but_health_and_files_needs_a_valid_key_with_its_scope(database_url, tmp_path):
    client = make_client(database_url, tmp_path, api_keys="secret-key-1,secret-key-2",
                         api_key_cache_s=0)
    ctx = client.app.state.ctx
    made = {scope: ctx.db.run(keys.create, ctx.key_secret, f"{scope}-key", [scope])[1]
            for scope in keys.SCOPES}
    revoked = ctx.db.run(keys.create, ctx.key_secret, "old", ["admin"])[1]
    ctx.db.run(keys.revoke, "old")
    expired = ctx.db.run(keys.create, ctx.key_secret, "lapsed", ["admin"],
                         datetime.now(UTC) - timedelta(minutes=1))[1]
    refused = {
        "missing API key": {}, "invalid API key": {"Authorization": "Bearer wrong"},
        "missing API key ": {"Authorization": "Basic eA=="},
        "invalid API key ": {"Authorization": f"Bearer {keys.new_key()}"},
        "was revoked": {"Authorization": f"Bearer {revoked}"},
        "expired at": {"Authorization": f"Bearer {expired}"},
    }
    spec = client.get("/openapi.json").json()
    checked = 0
    for method, path in routes(client):
        if path in OPEN:
            continue
        op = spec["paths"][path][method.lower()]
        scope = op["x-required-scope"]
        assert op["security"] == [{"HTTPBearer": []}] and f"`{scope}`" in op["description"]
        for message, headers in refused.items():
            response = client.request(method, concrete(path), headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
            assert message.strip() in response.json()["error"]["message"]
            assert response.headers["WWW-Authenticate"] == "Bearer"
        for lower in keys.SCOPES[:keys.SCOPES.index(scope)]:
            response = client.request(method, concrete(path),
                                      headers={"Authorization": f"Bearer {made[lower]}"})
            assert response.status_code == 403, (method, path, lower, response.text)
            assert response.json()["error"] == {
                "code": "forbidden",
                "message": f"this needs a key with scope {scope!r}; key '{lower}-key' has {lower}"}
        checked += 1
        if (method, path) in ENDLESS:
            continue
        for key in (made[scope], made["admin"], "secret-key-2"):
            ok = client.request(method, concrete(path), headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code not in (401, 403), (method, path, key, ok.text)
    assert checked >= 30


def test_without_keys_the_api_is_open_and_the_first_key_made_closes_it(database_url, tmp_path):
    client = make_client(database_url, tmp_path, api_key_cache_s=0)
    assert client.get("/api/media").status_code == 200
    made = client.post("/api/keys", json={"name": "first", "scopes": ["admin"]})
    assert made.status_code == 201
    key = made.json()["key"]
    assert key.startswith("dm_" + made.json()["prefix"] + "_")
    assert client.get("/api/media").status_code == 401
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/media", headers=auth).status_code == 200
    # Revoking the last key does not open the API again.
    assert client.delete("/api/keys/first", headers=auth).status_code == 204
    assert client.get("/api/media").status_code == 401
    assert "revoked" in client.get("/api/media", headers=auth).json()["error"]["message"]


def test_upload_rate_limit_answers_429_with_retry_after(database_url, tmp_path):
    client = make_client(database_url, tmp_path, upload_rate_per_minute=2)
    photo = media_files.jpeg_bytes(media_files.photo("chelsea"))
    codes = [client.post("/api/media/upload", files=[("files", ("a.jpg", photo))]).status_code
             for _ in range(3)]
    assert codes == [200, 200, 429]
    limited = client.post("/api/media/upload", files=[("files", ("a.jpg", photo))])
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"


def test_cors_is_closed_by_default_and_opens_for_configured_origins(database_url, tmp_path):
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    closed = make_client(database_url, tmp_path / "a")
    assert "access-control-allow-origin" not in closed.options("/api/media", headers=preflight).headers
    opened = make_client(database_url, tmp_path / "b", cors_origins="https://app.example")
    allowed = opened.options("/api/media", headers={**preflight, "Origin": "https://app.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"


@pytest.mark.parametrize("name", sorted(media_files.bad_files()))
def test_rejected_uploads_store_nothing(database_url, tmp_path, name):
    client = make_client(database_url, tmp_path)
    content, code = media_files.bad_files()[name]
    response = client.post("/api/media/upload", files=[("files", (name, content))])
    assert 400 <= response.status_code < 500
    assert response.json()["error"]["code"] == code
    assert client.get("/api/media").json()["items"] == []
    storage = tmp_path / "storage"
    assert not [p for p in storage.rglob("*") if p.is_file() and ".tmp" not in p.parts]


def test_hostile_file_names_never_reach_storage_keys(database_url, tmp_path):
    client = make_client(database_url, tmp_path)
    photo = media_files.jpeg_bytes(media_files.photo("coffee"))
    for name in ("../../etc/passwd.jpg", "x" * 1000 + ".jpg"):
        result = client.post("/api/media/upload", files=[("files", (name, photo))]).json()
        assert result["results"][0]["status"] in ("created", "duplicate")
    keys = [p.relative_to(tmp_path / "storage").as_posix()
            for p in (tmp_path / "storage").rglob("*") if p.is_file()]
    assert keys and all(re.fullmatch(r"originals/[0-9a-f]{2}/[0-9a-f]{64}\.jpg", k) for k in keys)


def test_oversized_uploads_are_refused_before_the_body_is_read(database_url, tmp_path):
    client = make_client(database_url, tmp_path, max_file_size=100_000, max_files_per_request=1)
    limit = 100_000 + 1024 * 1024
    declared = client.post("/api/media/upload", content=b"x" * 10,
                           headers={"Content-Length": str(limit + 1), "Content-Type": "multipart/form-data; boundary=b"})
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "payload_too_large"

    def chunks():
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'
        for _ in range(200):
            yield b"y" * 65536  # 13 MB, streamed without a length

    streamed = client.post("/api/media/upload", content=chunks(),
                           headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert streamed.status_code == 413
    one_file_too_big = client.post("/api/media/upload", files=[("files", ("big.jpg", b"z" * 200_000))])
    assert one_file_too_big.status_code == 413
    assert one_file_too_big.json()["error"]["code"] == "file_too_large"
    # Each refusal is a change that was asked for: the audit log has all three.
    entries = client.get("/api/audit").json()["items"]
    assert [(e["method"], e["route"], e["status"]) for e in entries] == [
        ("POST", "/api/media/upload", 413)] * 3


@pytest.mark.parametrize("query", ["/api/queue/items?model_id=a%00b", "/api/media?cursor=%00",
                                   "/api/queue/items?limit=3&model_id=%C3%8A%00"])
def test_a_nul_in_a_query_parameter_is_refused(database_url, tmp_path, query):
    # Found by schemathesis: Postgres text cannot hold a NUL, and the filter reached the query.
    client = make_client(database_url, tmp_path)
    r = client.get(query)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request" and "NUL" in r.json()["error"]["message"]
    assert client.get("/api/queue/items?model_id=tiny").status_code == 200


def test_an_upload_to_full_storage_is_a_507_and_stores_nothing(database_url, tmp_path, small_disk):
    import io

    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 255, (1000, 1000, 3), dtype=np.uint8)
    big = io.BytesIO()
    Image.fromarray(noise).save(big, "JPEG", quality=95)
    assert big.tell() > 1024 * 1024
    client = make_client(database_url, tmp_path)
    response = client.post("/api/media/upload", files=[("files", ("big.jpg", big.getvalue()))])
    assert response.status_code == 507
    assert response.json()["error"]["code"] == "storage_full"
    assert client.get("/api/media").json()["items"] == []
    assert [p for p in small_disk.rglob("*") if p.is_file()] == []
    small = media_files.jpeg_bytes(media_files.photo("coffee"))
    assert client.post("/api/media/upload", files=[("files", ("s.jpg", small))]).status_code == 200


def test_queue_reads_are_typed_with_enums_in_the_openapi_document(database_url, tmp_path):
    client = make_client(database_url, tmp_path)
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    statuses = {"pending", "queued", "processing", "completed", "failed", "cancelled"}
    assert set(schemas["SummaryRowOut"]["properties"]["status"]["enum"]) == statuses
    assert set(schemas["SummaryRowOut"]["properties"]["kind"]["enum"]) == {"photo", "video"}
    assert set(schemas["QueueStatsOut"]["properties"]["counts"]["propertyNames"]["enum"]) == statuses
    assert "WorkerStatusOut" in schemas
    stats = client.get("/api/queue/stats").json()
    assert stats["totals"]["cancelled"] == 0 and stats["counts"]["queued"] == {"photo": 0, "video": 0}
    assert client.get("/api/queue/summary").status_code == 200


def test_changes_and_refusals_are_in_the_audit_log_without_secrets(database_url, tmp_path):
    client = make_client(database_url, tmp_path, api_keys="env-secret-key", api_key_cache_s=0)
    ctx = client.app.state.ctx
    writer = ctx.db.run(keys.create, ctx.key_secret, "uploader", ["write"])[1]
    reader = ctx.db.run(keys.create, ctx.key_secret, "viewer", ["read"])[1]
    # Past the retention: the writer prunes it (on its first entry, then hourly).
    ctx.db.run(lambda conn: conn.execute(
        "INSERT INTO audit_log (at, key_name, client, method, route, status) "
        "VALUES (now() - interval '91 days', 'old', 'x', 'POST', '/api/x', 200)"))
    photo = media_files.jpeg_bytes(media_files.photo("coffee"))
    as_writer = {"Authorization": f"Bearer {writer}"}
    uploaded = client.post("/api/media/upload", files=[("files", ("a.jpg", photo))],
                           headers=as_writer).json()["results"][0]["media_id"]
    assert client.get("/api/media", headers=as_writer).status_code == 200  # a read: not recorded
    assert client.delete(f"/api/media/{uploaded}", headers={
        "Authorization": f"Bearer {reader}"}).status_code == 403
    assert client.get("/api/media?token=sekrit-token", headers={
        "Authorization": "Bearer not-a-key"}).status_code == 401
    assert client.delete(f"/api/media/{uploaded}", headers=as_writer).status_code == 204

    admin = {"Authorization": "Bearer env-secret-key"}
    page = client.get("/api/audit", headers=admin).json()
    got = [(e["key_name"], e["method"], e["route"], e["status"]) for e in page["items"]]
    assert got == [
        ("uploader", "DELETE", "/api/media/{media_id}", 204),
        ("anonymous", "GET", "/api/media", 401),
        ("viewer", "DELETE", "/api/media/{media_id}", 403),
        ("uploader", "POST", "/api/media/upload", 200),
    ]
    assert page["items"][0]["media_id"] == uploaded and page["items"][0]["client"]
    text = str(ctx.db.run(lambda conn: conn.execute("SELECT * FROM audit_log").fetchall()))
    for secret in (writer, reader, "not-a-key", "sekrit-token", "env-secret-key"):
        assert secret not in text

    # Filters and keyset pages.
    def ask(**params):
        r = client.get("/api/audit", params=params, headers=admin)
        assert r.status_code == 200, r.text
        return [(e["key_name"], e["status"]) for e in r.json()["items"]]

    assert ask(key_name="viewer") == [("viewer", 403)]
    assert ask(method="DELETE", status=204) == [("uploader", 204)]
    assert ask(media_id=uploaded) == [("uploader", 204), ("viewer", 403)]
    assert ask(since="2000-01-01T00:00:00Z", until="2000-01-02T00:00:00Z") == []
    first = client.get("/api/audit?limit=3", headers=admin).json()
    rest = client.get("/api/audit", params={"cursor": first["next_cursor"]}, headers=admin).json()
    assert len(first["items"]) == 3 and rest["next_cursor"] is None
    assert [e["id"] for e in first["items"] + rest["items"]][:5] == [
        e["id"] for e in client.get("/api/audit", headers=admin).json()["items"]][:5]
    bad = client.get("/api/audit?status=9000", headers=admin)
    assert bad.status_code == 422 and "status" in bad.json()["error"]["message"]
    assert client.get("/api/audit?cursor=zz", headers=admin).json()["error"]["code"] == \
        "invalid_cursor"
    # Reading the log is admin's; the refusal is itself recorded.
    assert client.get("/api/audit", headers=as_writer).status_code == 403
    assert ask(key_name="uploader", status=403) == [("uploader", 403)]


def test_a_change_and_its_audit_entry_commit_together(database_url, tmp_path):
    client = make_client(database_url, tmp_path, api_keys="env-secret-key", api_key_cache_s=0,
                         webhook_allow_private=True)
    ctx = client.app.state.ctx
    writer = {"Authorization": f"Bearer {ctx.db.run(keys.create, ctx.key_secret, 'w', ['write'])[1]}"}
    admin = {"Authorization": "Bearer env-secret-key"}
    photo = media_files.jpeg_bytes(media_files.photo("coffee"))
    media_id = client.post("/api/media/upload", files=[("files", ("a.jpg", photo))],
                           headers=writer).json()["results"][0]["media_id"]
    hook = client.post("/api/webhooks", json={"url": "http://127.0.0.1:9/x", "events": ["item.completed"]},
                       headers=admin)
    assert hook.status_code == 201

    def xmins(conn):
        return conn.execute(
            """SELECT (SELECT xmin::text FROM media_items WHERE id = %s) AS media,
                      (SELECT xmin::text FROM webhooks WHERE id = %s) AS webhook,
                      (SELECT xmin::text FROM audit_log WHERE route = '/api/media/upload') AS upload,
                      (SELECT xmin::text FROM audit_log WHERE route = '/api/webhooks') AS created""",
            (media_id, hook.json()["id"])).fetchone()

    found = ctx.db.run(xmins)
    assert found["media"] == found["upload"] and found["webhook"] == found["created"], found
    # The same upload again changes nothing: its entry is a transaction of its own.
    assert client.post("/api/media/upload", files=[("files", ("a.jpg", photo))],
                       headers=writer).json()["results"][0]["status"] == "duplicate"
    entries = ctx.db.run(lambda conn: conn.execute(
        "SELECT xmin::text, status FROM audit_log WHERE route = '/api/media/upload' ORDER BY id").fetchall())
    assert [e["status"] for e in entries] == [200, 200] and entries[1]["xmin"] != found["media"]


def test_a_change_on_a_path_with_a_nul_is_still_recorded(database_url, tmp_path):
    client = make_client(database_url, tmp_path)
    assert client.delete("/api/nowhere%00x").status_code == 404
    (entry,) = client.get("/api/audit").json()["items"]
    assert entry["route"] == "/api/nowherex" and entry["status"] == 404
