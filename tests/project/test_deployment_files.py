"""compose.yaml, cluster.yaml and the Serve configs: no Docker or cloud here, so check them
against the settings and the code they start."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from cluster.config.worker_env import FOREGROUND_ENV
from cluster.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def settings_from_env(env: dict[str, str], monkeypatch) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    return Settings()


def test_compose_services_ports_and_environment(monkeypatch):
    compose = load("compose.yaml")
    services = compose["services"]
    assert {"postgres", "minio", "minio-bucket", "ray-head", "ray-worker"} <= set(services)
    head = services["ray-head"]
    assert "depthmill up" in head["command"] and "ray start --head" in head["command"]
    assert {"8000:8000", "8265:8265"} <= set(head["ports"])
    assert head["shm_size"]
    assert head["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "healthcheck" in head and "/api/health" in " ".join(head["healthcheck"]["test"])
    env = head["environment"]
    assert env["RAY_AUTH_MODE"] == "disabled"
    assert {k: env[k] for k in FOREGROUND_ENV} == FOREGROUND_ENV
    depthmill_env = {k: v for k, v in env.items() if k.startswith("DEPTHMILL_")}
    unknown = {k for k in depthmill_env if k.removeprefix("DEPTHMILL_").lower() not in Settings.model_fields}
    assert not unknown, f"compose sets settings that do not exist: {unknown}"
    settings = settings_from_env(depthmill_env, monkeypatch)
    assert settings.storage == "s3" and settings.s3_endpoint == "http://minio:9000"
    assert settings.database_url.startswith("postgresql://") and "@postgres:5432/" in settings.database_url
    assert str(settings.port) in head["ports"][0]
    # The bucket the app uses is the one the init container creates.
    assert f"local/{settings.s3_bucket}" in services["minio-bucket"]["entrypoint"]
    assert services["ray-worker"]["environment"] == env
    assert "ray-head:6380" in services["ray-worker"]["command"] and "6380" in head["command"]
    for name in ("postgres", "minio"):
        assert "healthcheck" in services[name]


def test_cluster_launcher_config():
    config = load("cluster.yaml")
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    gpu = [t for name, t in types.items() if name != config["head_node_type"]]
    assert gpu and all("min_workers" in t and "max_workers" in t for t in gpu)
    assert max(t["max_workers"] for t in gpu) <= config["max_workers"]
    assert any("pip install" in c for c in config["setup_commands"])
    head_start = " ".join(config["head_start_ray_commands"])
    assert "ray start --head" in head_start and "depthmill up" in head_start
    assert "RAY_AUTH_MODE" in head_start
    worker_start = " ".join(config["worker_start_ray_commands"])
    assert "6380" in worker_start
    for start in (head_start, worker_start):
        assert all(f"{k}={v} " in start for k, v in FOREGROUND_ENV.items())


@pytest.mark.parametrize("name", ["serve_app/depth.yaml", "serve_app/depthmill.yaml"])
def test_serve_configs_validate_and_point_at_real_builders(name):
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(load(name)) if hasattr(
        ServeDeploySchema, "model_validate") else ServeDeploySchema.parse_obj(load(name))
    for app in config.applications:
        module, _, attr = app.import_path.partition(":")
        builder = getattr(importlib.import_module(module), attr)
        assert callable(builder)
        unknown = set(app.args) - set(Settings.model_fields)
        assert not unknown, f"{name} passes unknown settings {unknown}"
        Settings(**app.args)  # the values validate
