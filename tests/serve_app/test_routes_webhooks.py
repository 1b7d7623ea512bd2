"""/api/webhooks on the FastAPI app with a real database: create (secret once), list, get, patch,
rotate, delete, test, deliveries, retry, and a clear 4xx for every bad input."""

from __future__ import annotations

import uuid

import pytest

from db import events, webhooks
from db.webhooks import Outcome

URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def lan_api(make_api):
    return make_api(webhook_allow_private=True)


def test_create_shows_the_secret_once(lan_api):
    r = lan_api.post("/api/webhooks", json={"url": URL, "events": ["item.completed", "item.*"],
                                            "description": "mine"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["secret"].startswith("whsec_") and body["enabled"]
    hook_id = body["id"]
    assert lan_api.get(f"/api/webhooks/{hook_id}").json()["secret"] is None
    assert [h["secret"] for h in lan_api.get("/api/webhooks").json()] == [None]
    assert body["secret"] not in lan_api.get("/api/webhooks").text


def test_patch_rotate_disable_and_delete(lan_api):
    hook_id = lan_api.post("/api/webhooks", json={"url": URL, "events": ["*"]}).json()["id"]
    r = lan_api.patch(f"/api/webhooks/{hook_id}",
                      json={"enabled": False, "events": ["media.*"], "description": "d"})
    assert r.status_code == 200 and not r.json()["enabled"] and r.json()["secret"] is None
    assert r.json()["events"] == ["media.*"] and r.json()["disabled_reason"] == "disabled by hand"
    r = lan_api.patch(f"/api/webhooks/{hook_id}", json={"rotate_secret": True, "enabled": True})
    assert r.json()["secret"].startswith("whsec_") and r.json()["enabled"]
    assert lan_api.delete(f"/api/webhooks/{hook_id}").status_code == 204
    assert lan_api.get(f"/api/webhooks/{hook_id}").status_code == 404


def test_test_deliveries_and_retry(lan_api):
    hook_id = lan_api.post("/api/webhooks", json={"url": URL, "events": ["item.*"]}).json()["id"]
    r = lan_api.post(f"/api/webhooks/{hook_id}/test")
    assert r.status_code == 202 and r.json()["event_type"] == "webhook.test"
    lan_api.ctx.db.run(events.emit, "item.failed", {"item_id": "x"})
    page = lan_api.get(f"/api/webhooks/{hook_id}/deliveries", params={"limit": 1}).json()
    assert [d["event_type"] for d in page["items"]] == ["item.failed"] and page["next_cursor"]
    rest = lan_api.get(f"/api/webhooks/{hook_id}/deliveries",
                       params={"cursor": page["next_cursor"]}).json()
    assert [d["event_type"] for d in rest["items"]] == ["webhook.test"]
    (claimed,) = lan_api.ctx.db.run(webhooks.claim, 5, "w", 30)
    path = f"/api/webhooks/{hook_id}/deliveries/{claimed.id}/retry"
    assert lan_api.post(path).status_code == 409
    lan_api.ctx.db.run(webhooks.record, claimed, Outcome("failed", 400), disable_after_s=60)
    r = lan_api.post(path)
    assert r.status_code == 202 and r.json()["status"] == "pending"


@pytest.mark.parametrize("body, fragment", [
    ({"url": URL, "events": ["item.exploded"]}, "unknown event type"),
    ({"url": URL, "events": []}, "events"),
    ({"url": "ftp://example.com/x", "events": ["*"]}, "not an http or https URL"),
    ({"url": "not-a-url", "events": ["*"]}, "not an http or https URL"),
    ({"url": "http://user:pw@127.0.0.1/", "events": ["*"]}, "credentials"),
    ({"url": "http://169.254.169.254/latest", "events": ["*"]}, "metadata"),
])
def test_bad_input_is_a_clear_422(lan_api, body, fragment):
    r = lan_api.post("/api/webhooks", json=body)
    assert r.status_code == 422 and fragment in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "http://10.0.0.1/x", "http://[::1]/x",
                                 "http://[::ffff:192.168.1.1]/x", "http://100.64.0.1/x"])
def test_private_destinations_are_refused_without_the_setting(api, url):
    r = api.post("/api/webhooks", json={"url": url, "events": ["*"]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "forbidden_destination"
    assert "refused" in r.json()["error"]["message"]


def test_unknown_ids_are_404(lan_api):
    missing = uuid.uuid4()
    for method, path in [("get", f"/api/webhooks/{missing}"),
                         ("delete", f"/api/webhooks/{missing}"),
                         ("post", f"/api/webhooks/{missing}/test"),
                         ("get", f"/api/webhooks/{missing}/deliveries"),
                         ("post", f"/api/webhooks/{missing}/deliveries/1/retry")]:
        r = getattr(lan_api, method)(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (method, path)
    assert lan_api.patch(f"/api/webhooks/{missing}", json={"enabled": True}).status_code == 404
    hook_id = lan_api.post("/api/webhooks", json={"url": URL, "events": ["*"]}).json()["id"]
    assert lan_api.get(f"/api/webhooks/{hook_id}/deliveries",
                       params={"cursor": "zz"}).status_code == 400


def test_an_api_key_is_needed(make_api):
    keyed = make_api(api_keys="k1")
    assert keyed.get("/api/webhooks").status_code == 401
    assert keyed.get("/api/webhooks", headers={"Authorization": "Bearer k1"}).status_code == 200


@pytest.mark.parametrize("body", [
    {"url": "http://127.0.0.1:9/a b", "events": ["*"]},
    {"url": "http://127.0.0.1:9/\x00", "events": ["*"]},
    {"url": URL, "events": ["*"], "description": "nul \x00 here"},
    {"url": URL, "events": ["x" * 200]},
])
def test_hostile_strings_are_422_not_500(lan_api, body):
    assert lan_api.post("/api/webhooks", json=body).status_code == 422


def test_out_of_range_ids_and_cursors_are_4xx(lan_api):
    from db import cursor as cursor_key

    hook_id = lan_api.post("/api/webhooks", json={"url": URL, "events": ["*"]}).json()["id"]
    assert lan_api.post(f"/api/webhooks/{hook_id}/deliveries/{2**70}/retry").status_code == 422
    r = lan_api.get(f"/api/webhooks/{hook_id}/deliveries",
                    params={"cursor": cursor_key.encode(2**70)})
    assert r.status_code == 400
