"""/api/ai/models, and every request that names a model: one not served here is refused with a
422 naming the served ones, before anything is stored or queued. Without Ray: the database and
local storage are real; the depth deployment's answer is the health tests' stand-in."""

from __future__ import annotations

from cluster.config.models import TINY_LICENCE
from db import queue
from serve_app.api.routes import health as health_routes
from tests.serve_app.test_routes_health import INFO, FakeDepth
from tests.serve_app.test_routes_media import distinct_photo
from devkit.factories import insert_media


def assert_refused(r, model: str) -> None:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "model_not_served"
    assert repr(model) in error["message"] and "served: 'tiny'" in error["message"]


def test_models_lists_the_served_model_with_its_licence_and_whether_it_is_loaded(make_api, monkeypatch):
    monkeypatch.setattr(health_routes, "_running_replicas", lambda: 2)
    loaded = make_api(depth=FakeDepth()).get("/api/ai/models")
    assert loaded.status_code == 200
    assert loaded.json() == {"models": [{"id": "tiny", "licence": TINY_LICENCE, "loaded": True,
                                         "replicas": 2, "device": INFO["device"],
                                         "where": [{"replica": None, "node": None,
                                                    "device": INFO["device"],
                                                    "photo_decoder": "pillow"}]}]}

    down = make_api(depth=FakeDepth(RuntimeError("replica died"))).get("/api/ai/models")
    assert down.json()["models"] == [{"id": "tiny", "licence": TINY_LICENCE, "loaded": False,
                                      "replicas": None, "device": None, "where": None}]


def test_models_needs_an_api_key_when_keys_are_set(make_api):
    api = make_api(api_keys="secret-key", depth=FakeDepth())
    assert api.get("/api/ai/models").status_code == 401
    ok = api.get("/api/ai/models", headers={"Authorization": "Bearer secret-key"})
    assert ok.status_code == 200


def test_enqueue_for_an_unserved_model_is_refused_and_queues_nothing(api):
    with api.ctx.db.connection() as conn:
        m = insert_media(conn, "photo")
    assert_refused(api.post(f"/api/queue/enqueue/{m.id}", params={"model": "other/model"}),
                   "other/model")
    assert api.ctx.db.run(queue.items_for_media, m.id) == []

    served = api.post(f"/api/queue/enqueue/{m.id}", params={"model": "tiny"})
    assert served.status_code == 200 and served.json()["model_id"] == "tiny"


def test_upload_for_an_unserved_model_is_refused_and_stores_nothing(api):
    r = api.post("/api/media/upload", params={"model": "depth-anything/Depth-Anything-V2-Large-hf"},
                 files=[("files", ("a.jpg", distinct_photo(7)))])
    assert_refused(r, "depth-anything/Depth-Anything-V2-Large-hf")
    assert api.get("/api/media").json()["items"] == []

    served = api.post("/api/media/upload", params={"model": "tiny"},
                      files=[("files", ("a.jpg", distinct_photo(7)))])
    assert served.status_code == 200 and served.json()["accepted"] == 1


class EveryReplica:
    """A depth handle's broadcast: every replica's ``info()``."""

    def __init__(self, infos) -> None:
        self.infos = infos

    def broadcast(self, method: str):
        infos = self.infos

        class Response:
            @staticmethod
            async def results_async():
                return infos

        assert method == "info"
        return Response


def replica(name: str, *models: str) -> dict:
    return {**INFO, "replica": name, "node": "node-1",
            "loaded_models": {m: {**INFO, "model_id": m} for m in models}}


def test_models_lists_every_served_model_and_the_replicas_that_have_it(make_api):
    api = make_api(models="tiny,tiny:2", depth=EveryReplica(
        [replica("r1", "tiny"), replica("r2", "tiny", "tiny:2")]))
    listed = {m["id"]: m for m in api.get("/api/ai/models").json()["models"]}
    assert list(listed) == ["tiny", "tiny:2"]
    assert listed["tiny"]["replicas"] == 2 and listed["tiny:2"]["replicas"] == 1
    assert listed["tiny:2"] == {"id": "tiny:2", "licence": TINY_LICENCE, "loaded": True,
                                "replicas": 1, "device": "cpu",
                                "where": [{"replica": "r2", "node": "node-1", "device": "cpu",
                                           "photo_decoder": "pillow"}]}
    idle = make_api(models="tiny,tiny:2", depth=EveryReplica([replica("r1", "tiny")]))
    second = idle.get("/api/ai/models").json()["models"][1]
    assert (second["loaded"], second["replicas"], second["where"]) == (False, 0, [])


def test_each_served_model_can_be_asked_for_and_others_are_refused_naming_them(make_api):
    api = make_api(models="tiny,tiny:2")
    with api.ctx.db.connection() as conn:
        m = insert_media(conn, "photo")
    r = api.post(f"/api/queue/enqueue/{m.id}", params={"model": "tiny:3"})
    assert r.status_code == 422 and "served: 'tiny', 'tiny:2'" in r.json()["error"]["message"]
    for model in ("tiny:2", "tiny"):
        queued = api.post(f"/api/queue/enqueue/{m.id}", params={"model": model})
        assert queued.status_code == 200 and queued.json()["model_id"] == model
    upload = api.post("/api/media/upload", params={"model": "tiny:2"},
                      files=[("files", ("a.jpg", distinct_photo(8)))]).json()
    assert upload["accepted"] == 1
    (item,) = api.ctx.db.run(queue.items_for_media, upload["results"][0]["media_id"])
    assert item.model_id == "tiny:2"
