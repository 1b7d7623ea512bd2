"""/api/queue without Ray: items, enqueue, cancel, retry, paging, counts, worker control."""

from __future__ import annotations

import uuid

import pytest

from db import queue
from devkit.factories import insert_media

MODEL = "tiny"


def enqueued(api, kind: str = "photo", **params) -> dict:
    with api.ctx.db.connection() as conn:
        m = insert_media(conn, kind)
    r = api.post(f"/api/queue/enqueue/{m.id}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def failed_for_good(api, item_id: str) -> None:
    """Claim the item and fail it without a retry, as the scheduler records corrupt media."""
    (claimed,) = api.ctx.db.run(queue.claim_batch, 1, "test-owner", 30, model_id=MODEL)
    assert str(claimed.id) == item_id
    api.ctx.db.run(queue.fail, claimed.lease, "corrupt", retryable=False)


def test_enqueue_queues_media_once_for_the_model(api):
    item = enqueued(api, "video")
    assert item["status"] == "queued" and item["model_id"] == MODEL and item["kind"] == "video"
    assert item["attempts"] == 0 and item["max_attempts"] == api.ctx.settings.max_attempts
    again = api.post(f"/api/queue/enqueue/{item['media_id']}")
    assert again.status_code == 200 and again.json()["id"] == item["id"]  # the active item
    assert api.get(f"/api/queue/items/{item['id']}").json() == item


def test_enqueue_with_a_priority(api):
    assert enqueued(api, priority=0)["priority"] == 0
    assert api.post(f"/api/queue/enqueue/{uuid.uuid4()}", params={"priority": 201}).status_code == 422


def test_enqueue_of_missing_media_is_a_404(api):
    r = api.post(f"/api/queue/enqueue/{uuid.uuid4()}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_a_missing_item_is_a_404(api):
    for method, path in (("GET", ""), ("POST", "/cancel"), ("POST", "/retry")):
        r = api.request(method, f"/api/queue/items/{uuid.uuid4()}{path}")
        assert r.status_code == 404, (method, path)
        assert r.json()["error"]["code"] == "not_found"
    assert api.get("/api/queue/items/not-a-uuid").status_code == 422


def test_cancel_then_retry_then_cancel_again(api):
    item = enqueued(api)
    cancelled = api.post(f"/api/queue/items/{item['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    twice = api.post(f"/api/queue/items/{item['id']}/cancel")
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "illegal_transition"
    retried = api.post(f"/api/queue/items/{item['id']}/retry")
    assert retried.status_code == 200
    assert retried.json()["status"] == "queued" and retried.json()["attempts"] == 0
    assert api.post(f"/api/queue/items/{item['id']}/cancel").json()["status"] == "cancelled"


def test_a_queued_item_cannot_be_retried(api):
    item = enqueued(api)
    r = api.post(f"/api/queue/items/{item['id']}/retry")
    assert r.status_code == 409 and r.json()["error"]["code"] == "illegal_transition"


def test_cancelling_a_running_item_asks_its_holder_to_stop(api):
    item = enqueued(api)
    api.ctx.db.run(queue.claim_batch, 1, "test-owner", 30, model_id=MODEL)
    r = api.post(f"/api/queue/items/{item['id']}/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "processing" and r.json()["cancel_requested"] is True


def test_a_failed_item_is_retried_with_fresh_attempts(api):
    item = enqueued(api)
    failed_for_good(api, item["id"])
    failed = api.get(f"/api/queue/items/{item['id']}").json()
    assert failed["status"] == "failed" and failed["last_error"] == "corrupt"
    retried = api.post(f"/api/queue/items/{item['id']}/retry").json()
    assert retried["status"] == "queued" and retried["attempts"] == 0
    assert retried["last_error"] == "corrupt"  # kept


def test_retry_failed_requeues_every_failed_item_of_a_kind(api):
    photo, video = enqueued(api, "photo", priority=0), enqueued(api, "video", priority=1)
    failed_for_good(api, photo["id"])
    failed_for_good(api, video["id"])
    assert api.post("/api/queue/retry-failed", params={"kind": "video"}).json() == {"requeued": 1}
    assert api.get(f"/api/queue/items/{video['id']}").json()["status"] == "queued"
    assert api.get(f"/api/queue/items/{photo['id']}").json()["status"] == "failed"
    assert api.post("/api/queue/retry-failed").json() == {"requeued": 1}
    assert api.post("/api/queue/retry-failed").json() == {"requeued": 0}


def test_items_are_paged_in_claim_order_without_gaps_or_repeats(api):
    ids = [enqueued(api, priority=p)["id"] for p in (5, 0, 5, 1, 9)]
    seen, cursor, pages = [], None, 0
    while True:
        r = api.get("/api/queue/items", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 2
        seen += page["items"]
        pages += 1
        if not (cursor := page["next_cursor"]):
            break
    assert pages == 3
    assert sorted(i["id"] for i in seen) == sorted(ids)
    assert [i["priority"] for i in seen] == [0, 1, 5, 5, 9]


def test_items_filtered_by_status_and_kind(api):
    photo, video, cancelled = enqueued(api, "photo"), enqueued(api, "video"), enqueued(api, "photo")
    api.post(f"/api/queue/items/{cancelled['id']}/cancel")

    def listed(**params) -> set[str]:
        r = api.get("/api/queue/items", params=params)
        assert r.status_code == 200, r.text
        return {i["id"] for i in r.json()["items"]}

    assert listed() == {photo["id"], video["id"], cancelled["id"]}
    assert listed(kind="video") == {video["id"]}
    assert listed(status="queued") == {photo["id"], video["id"]}
    assert listed(status=["queued", "cancelled"]) == {photo["id"], video["id"], cancelled["id"]}
    assert listed(status="cancelled", kind="photo") == {cancelled["id"]}
    assert listed(model_id="another-model") == set()


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"status": "lost"},
                                    {"kind": "audio"}])
def test_bad_item_queries_are_422(api, params):
    r = api.get("/api/queue/items", params=params)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_a_bad_cursor_is_a_400(api):
    r = api.get("/api/queue/items", params={"cursor": "not-a-cursor"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_cursor"


def test_status_stats_and_summary_count_the_items(api):
    enqueued(api, "photo")
    enqueued(api, "video")
    cancelled = enqueued(api, "photo")
    api.post(f"/api/queue/items/{cancelled['id']}/cancel")
    status = api.get("/api/queue/status").json()
    assert set(status) == {"waiting", "active", "completed", "failed", "total"}
    assert status["waiting"] == 2 and status["active"] == 0 and status["failed"] == 0
    stats = api.get("/api/queue/stats").json()
    assert stats["totals"]["waiting"] == 2 and stats["remaining"] >= 2
    summary = api.get("/api/queue/summary").json()
    assert {(r["status"], r["kind"]) for r in summary} >= {("queued", "photo"), ("queued", "video")}


def status_of(**fields) -> dict:
    """The scheduler's status, in the shape Scheduler.status() answers."""
    return {"running": True, "paused": False, "owner": "scheduler-test", "in_flight": 0,
            "max_in_flight": 4, "depth_available": True, "depth_error": None,
            "storage_available": True, "storage_error": None, "last_error": None,
            "counts": {"claimed": 0}, "model": "tiny", **fields}


class FakeScheduler:
    """Stands in for the scheduler actor's handle: each method answers a dict."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail
        for name in ("status", "pause", "resume"):
            setattr(self, name, self._method(name))

    def _method(self, name: str):
        scheduler = self

        class Method:
            @staticmethod
            async def remote():
                scheduler.calls.append(name)
                if scheduler.fail:
                    raise RuntimeError("actor died")
                return status_of(paused=name == "pause", last_error=f"called {name}")

        return Method


def test_worker_control_calls_the_scheduler(make_api):
    scheduler = FakeScheduler()
    api = make_api(scheduler=lambda: scheduler)
    assert api.post("/api/queue/worker/stop").json() == status_of(paused=True,
                                                                  last_error="called pause")
    assert api.post("/api/queue/worker/start").json() == status_of(last_error="called resume")
    assert api.get("/api/queue/worker/status").json()["last_error"] == "called status"
    assert scheduler.calls == ["pause", "resume", "status"]


@pytest.mark.parametrize("scheduler", [None, lambda: None, lambda: FakeScheduler(fail=True)],
                         ids=["no-lookup", "not-running", "not-answering"])
def test_worker_control_without_a_scheduler_is_a_503(make_api, scheduler):
    api = make_api(scheduler=scheduler)
    for method, path in (("GET", "status"), ("POST", "start"), ("POST", "stop")):
        r = api.request(method, f"/api/queue/worker/{path}")
        assert r.status_code == 503 and r.json()["error"]["code"] == "scheduler_unavailable"
