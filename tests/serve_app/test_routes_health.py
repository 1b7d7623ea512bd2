"""/api/health, /api/ai/health, /api/ai/info without Ray: fakes stand in for the depth deployment
and the scheduler, the database and local storage are real."""

from __future__ import annotations

import pytest

from cluster.storage import StorageUnavailable
from db.connection import DatabaseUnavailable
from serve_app.api.routes import health as health_routes

INFO = {"model_id": "tiny", "revision": None, "device": "cpu", "dtype": "float32",
        "real_estimate": False, "photo_decoder": "pillow"}
SCHEDULER_OK = {"depth_available": True, "storage_available": True, "last_error": None,
                "paused": False, "in_flight": 0}


def remote(answer):
    """A Ray handle's method: ``.remote()`` gives an awaitable of ``answer`` (or raises it)."""

    class Method:
        @staticmethod
        async def remote():
            if isinstance(answer, BaseException):
                raise answer
            return answer

    return Method


class FakeDepth:
    def __init__(self, info=INFO) -> None:
        self.info = remote(info)


class FakeScheduler:
    def __init__(self, status=SCHEDULER_OK) -> None:
        self.status = remote(status)


DELIVERER_OK = {"running": True, "owner": "webhooks-test", "in_flight": 0, "max_in_flight": 64,
                "counts": {}, "last_error": None}


class FakeDeliverer:
    def __init__(self, status=DELIVERER_OK) -> None:
        self.status = remote(status)


@pytest.fixture
def ray_connected(monkeypatch):
    monkeypatch.setattr(health_routes, "_ray_ok", lambda: None)


def test_every_service_healthy(make_api, ray_connected):
    api = make_api(depth=FakeDepth(), scheduler=lambda: FakeScheduler())
    r = api.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy" and body["version"] and body["timestamp"]
    services = body["services"]
    assert set(services) == {"database", "storage", "ray", "depth", "scheduler", "queue"}
    assert all(s["status"] == "healthy" for s in services.values()), services
    assert services["depth"]["model_id"] == "tiny" and "random weights" in services["depth"]["note"]
    assert services["queue"]["total"] == 0


def test_without_depth_and_scheduler_the_api_is_degraded_not_down(api):
    r = api.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "degraded"
    services = body["services"]
    assert services["database"]["status"] == services["storage"]["status"] == "healthy"
    assert services["depth"] == {"status": "unhealthy", "error": "no depth deployment configured", "age_s": 0.0}
    assert services["scheduler"] == {"status": "unhealthy", "error": "scheduler not running", "age_s": 0.0}
    assert services["queue"]["status"] == "healthy"


@pytest.mark.parametrize("status", [{**SCHEDULER_OK, "depth_available": False},
                                    {**SCHEDULER_OK, "storage_available": False},
                                    {**SCHEDULER_OK, "last_error": "refill: OperationalError"}])
def test_a_scheduler_that_cannot_claim_is_degraded(make_api, ray_connected, status):
    api = make_api(depth=FakeDepth(), scheduler=lambda: FakeScheduler(status))
    body = api.get("/api/health").json()
    assert body["services"]["scheduler"]["status"] == "degraded"
    assert body["status"] == "degraded"


def test_a_depth_service_or_scheduler_that_does_not_answer_is_unhealthy(make_api, ray_connected):
    api = make_api(depth=FakeDepth(RuntimeError("replica died")),
                   scheduler=lambda: FakeScheduler(RuntimeError("actor died")))
    r = api.get("/api/health")
    assert r.status_code == 200  # degraded: the API itself still works
    services = r.json()["services"]
    assert services["depth"] == {"status": "unhealthy", "error": "RuntimeError: replica died", "age_s": 0.0}
    assert services["scheduler"] == {"status": "unhealthy", "error": "actor died", "age_s": 0.0}


def test_without_the_database_the_api_is_unhealthy(make_api, ray_connected, monkeypatch):
    api = make_api(depth=FakeDepth(), scheduler=lambda: FakeScheduler())

    def down(*args, **kwargs):
        raise DatabaseUnavailable("connection refused")

    monkeypatch.setattr(api.ctx.db, "ping", down)
    r = api.get("/api/health")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unhealthy"
    assert body["services"]["database"]["status"] == "unhealthy"
    assert "connection refused" in body["services"]["database"]["error"]
    assert body["services"]["queue"] == {"status": "unhealthy", "error": "database unreachable"}


def test_unavailable_storage_is_degraded(make_api, ray_connected, monkeypatch):
    api = make_api(depth=FakeDepth(), scheduler=lambda: FakeScheduler())

    def full() -> None:
        raise StorageUnavailable("storage directory has 1 MiB free")

    monkeypatch.setattr(api.ctx.storage, "check", full)
    r = api.get("/api/health")
    assert r.status_code == 200
    storage = r.json()["services"]["storage"]
    assert storage == {"status": "unhealthy",
                       "error": "StorageUnavailable: storage directory has 1 MiB free"}
    assert r.json()["status"] == "degraded"


def test_the_webhook_deliverer_is_reported_when_the_gateway_has_one(make_api, ray_connected):
    healthy = make_api(depth=FakeDepth(), scheduler=lambda: FakeScheduler(),
                       deliverer=lambda: FakeDeliverer()).get("/api/health").json()
    assert healthy["status"] == "healthy"
    assert healthy["services"]["webhooks"]["status"] == "healthy"
    missing = make_api(depth=FakeDepth(), scheduler=lambda: FakeScheduler(),
                       deliverer=lambda: None).get("/api/health").json()
    assert missing["status"] == "degraded"
    assert missing["services"]["webhooks"] == {
        "status": "unhealthy", "error": "webhook deliverer not running", "age_s": 0.0}
    failing = make_api(depth=FakeDepth(), scheduler=lambda: FakeScheduler(), deliverer=lambda:
                       FakeDeliverer({**DELIVERER_OK, "last_error": "OperationalError: gone"})
                       ).get("/api/health").json()
    assert failing["status"] == "degraded"
    assert failing["services"]["webhooks"]["status"] == "degraded"
    assert failing["services"]["webhooks"]["last_error"] == "OperationalError: gone"


def test_ai_health(make_api):
    healthy = make_api(depth=FakeDepth()).get("/api/ai/health")
    assert healthy.status_code == 200 and healthy.json()["status"] == "healthy"
    assert healthy.json()["model_id"] == "tiny"
    none = make_api().get("/api/ai/health")
    assert none.status_code == 503 and none.json()["status"] == "unhealthy"
    broken = make_api(depth=FakeDepth(TimeoutError("slow"))).get("/api/ai/health")
    assert broken.status_code == 503 and broken.json()["error"] == "TimeoutError: slow"


def test_a_depth_deployment_short_of_replicas_is_degraded_while_the_rest_answer(
        make_api, ray_connected, monkeypatch):
    # As after a node with a replica was lost: Serve waits for a node to start one on.
    short = "depth deployment unhealthy: 1 of its replicas running (replica died)"
    monkeypatch.setattr(health_routes, "_replicas_short", lambda: short)
    api = make_api(depth=FakeDepth(), scheduler=lambda: FakeScheduler())
    r = api.get("/api/health")
    assert r.status_code == 200 and r.json()["status"] == "degraded"
    depth = r.json()["services"]["depth"]
    assert depth["status"] == "degraded" and depth["error"] == short and depth["model_id"] == "tiny"
    ai = api.get("/api/ai/health")
    assert ai.status_code == 200 and ai.json()["status"] == "degraded"
    assert api.get("/api/ai/info").status_code == 200


def test_ai_info_reports_the_model_and_its_replicas(make_api, monkeypatch):
    monkeypatch.setattr(health_routes, "_replica_count", lambda: 2)
    r = make_api(depth=FakeDepth({**INFO, "real_estimate": True})).get("/api/ai/info")
    assert r.status_code == 200
    info = r.json()
    assert info["replicas"] == 2 and info["device"] == "cpu" and info["note"] is None


def test_ai_info_without_depth_is_a_503(make_api):
    r = make_api().get("/api/ai/info")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "depth_unavailable"


def test_health_routes_need_no_api_key(make_api):
    api = make_api(api_keys="secret-key", depth=FakeDepth())
    assert api.get("/api/health").status_code == 200
    assert api.get("/api/ai/health").status_code == 200
