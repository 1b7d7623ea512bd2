"""What the web app's library asks of /api/media: the timeline by capture date, thumbnails in
the list, a total, the statuses of many items at once and an item's neighbours; and the pages."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from cluster.storage import keys as storage_keys
from db import media
from devkit.factories import new_media


def at(day: int) -> datetime:
    return datetime(2024, 1, day, 12, tzinfo=timezone.utc)


@pytest.fixture
def timeline(api):
    """Four items uploaded in this order; taken on 5, 9, (no date), 1 January."""
    taken = [at(5), at(9), None, at(1)]
    return [api.ctx.db.run(media.insert, new_media(taken_at=t)).id for t in taken]


def listed(api, **params) -> list[str]:
    seen, cursor = [], None
    while True:
        r = api.get("/api/media", params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        seen += [m["id"] for m in r.json()["items"]]
        if not (cursor := r.json()["next_cursor"]):
            return seen


def test_the_timeline_is_by_capture_date_and_undated_items_by_upload(api, timeline):
    first, second, undated, fourth = map(str, timeline)
    # The undated one was uploaded today: newer than every capture date.
    assert listed(api, order="taken", limit=1) == [undated, second, first, fourth]
    assert listed(api, order="uploaded", limit=3) == [fourth, undated, second, first]


def test_a_cursor_of_one_order_is_read_in_that_order(api, timeline):
    page = api.get("/api/media", params={"order": "taken", "limit": 2}).json()
    rest = api.get("/api/media", params={"order": "taken", "limit": 10, "cursor": page["next_cursor"]}).json()
    assert [m["id"] for m in page["items"] + rest["items"]] == listed(api, order="taken")


def test_the_list_gives_thumbnail_urls_once_they_exist_and_a_total_when_asked(api, timeline):
    api.ctx.storage.put_bytes(storage_keys.thumbnail(timeline[0]), b"webp", "image/webp")
    body = api.get("/api/media", params={"total": "true", "limit": 2}).json()
    assert body["total"] == 4 and len(body["items"]) == 2
    thumbs = {m["id"]: m["thumbnail_url"] for m in api.get("/api/media").json()["items"]}
    assert thumbs[str(timeline[1])] is None
    url = thumbs[str(timeline[0])]
    assert "/api/files/thumbnails/" in url
    assert api.get(url[url.index("/api/files/"):]).content == b"webp"
    assert api.get("/api/media").json()["total"] is None  # counting is asked for, not free
    assert api.get("/api/media", params={"total": "true", "kind": "video"}).json()["total"] == 0


def test_statuses_of_several_items_in_one_request(api, timeline):
    item = api.post(f"/api/queue/enqueue/{timeline[0]}").json()
    api.post(f"/api/queue/items/{item['id']}/cancel")
    api.post(f"/api/queue/enqueue/{timeline[1]}")
    unknown = uuid.uuid4()
    r = api.get("/api/media/status", params={"ids": f"{timeline[0]},{timeline[1]},{timeline[2]},{unknown}"})
    assert r.status_code == 200, r.text
    assert r.json()["statuses"] == {str(timeline[0]): "cancelled", str(timeline[1]): "queued",
                                    str(timeline[2]): None}


@pytest.mark.parametrize("ids, code", [("not-a-uuid", "invalid_ids"),
                                       (",".join(str(uuid.uuid4()) for _ in range(501)), "too_many_ids")])
def test_bad_status_lookups_are_422(api, ids, code):
    r = api.get("/api/media/status", params={"ids": ids})
    assert r.status_code == 422 and r.json()["error"]["code"] == code


def test_neighbours_follow_the_list_and_its_filters(api, timeline):
    first, second, undated, fourth = map(str, timeline)

    def beside(media_id, **params):
        r = api.get(f"/api/media/{media_id}/neighbours", params=params)
        assert r.status_code == 200, r.text
        return r.json()["previous"], r.json()["next"]

    assert beside(second, order="taken") == (undated, first)
    assert beside(undated, order="taken") == (None, second)
    assert beside(fourth, order="taken") == (first, None)
    assert beside(second, order="uploaded") == (undated, first)
    api.post(f"/api/queue/enqueue/{first}")
    api.post(f"/api/queue/enqueue/{fourth}")
    assert beside(first, order="taken", status="queued") == (None, fourth)
    assert api.get(f"/api/media/{uuid.uuid4()}/neighbours").status_code == 404


def test_the_page_is_served_for_the_library_and_for_deep_links(api):
    for path in ["/", f"/view/{uuid.uuid4()}"]:
        r = api.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/app/js/main.js">' in r.text
    module = api.get("/app/js/viewer.js")
    assert module.status_code == 200 and "javascript" in module.headers["content-type"]
    assert api.get("/view/not-an-id").status_code == 422
    assert api.get("/app/js/missing.js").status_code == 404
    assert api.get("/docs").status_code == 200


def test_connect_tells_how_to_reach_the_app_from_another_device(make_api):
    local = make_api().get("/api/app/connect").json()
    assert local["urls"] == [] and "DEPTHMILL_HOST=0.0.0.0" in local["note"] and local["qr_svg"] is None
    public = make_api(public_url="https://depthmill.example:8443/").get("/api/app/connect").json()
    assert public["urls"] == ["https://depthmill.example:8443/"]
    assert public["qr_svg"].startswith("<svg") and public["secure"] and public["note"] is None
    plain = make_api(public_url="http://depthmill.example/").get("/api/app/connect").json()
    assert not plain["secure"] and "https" in plain["note"]
