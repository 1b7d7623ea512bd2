"""The depthmill command refusing a model other than the one running or served, before it
starts or submits anything."""

from __future__ import annotations

import pytest
import ray

from cluster import runtime
from cluster.cli import main
from devkit import media_files


@pytest.fixture
def a_running_scheduler_for(monkeypatch):
    """Stands in for a live cluster whose scheduler reports its models (status()["models"])."""
    started = []

    def running(model):
        monkeypatch.setattr(runtime, "cluster_address", lambda temp_dir=None: "127.0.0.1:1")
        monkeypatch.setattr(runtime, "connect_ray", lambda settings, start=True: False)
        monkeypatch.setattr(runtime, "running_models", lambda: [model])
        for name in ("migrate", "start_serve", "get_or_start_scheduler", "down"):
            monkeypatch.setattr(runtime, name, lambda *a, **k: started.append(name))
        monkeypatch.setattr(runtime, "EmbeddedPostgres", lambda *a, **k: started.append("pg"))
        monkeypatch.setattr(ray, "shutdown", lambda: started.append("ray.shutdown"))
        return started

    return running


def test_up_for_another_model_is_refused_and_leaves_the_running_one(
    a_running_scheduler_for, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("DEPTHMILL_HOME", str(tmp_path))
    started = a_running_scheduler_for("model-a")
    with pytest.raises(runtime.ModelConflict, match="already running for model 'model-a'"):
        runtime.up(runtime.Settings(home=tmp_path, model="model-b"))
    assert main(["up", "--model", "model-b", "--detach"]) == 1
    out = capsys.readouterr().out
    assert "already running for model 'model-a'" in out and "depthmill down" in out
    assert len(out.strip().splitlines()) == 1
    assert started == []  # nothing started, redeployed or stopped


def test_a_noncommercial_model_is_refused_before_anything_starts(
    a_running_scheduler_for, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("DEPTHMILL_HOME", str(tmp_path))
    started = a_running_scheduler_for("depth-anything/Depth-Anything-V2-Large-hf")
    large = "depth-anything/Depth-Anything-V2-Large-hf"
    photo = tmp_path / "in" / "a.jpg"
    photo.parent.mkdir()
    photo.write_bytes(media_files.jpeg_bytes(media_files.photo("coffee")))
    for argv in (["up", "--model", large, "--detach"], ["process", "--model", large, str(photo)]):
        assert main(argv) == 1
        out = capsys.readouterr().out
        assert "CC-BY-NC-4.0" in out and "DEPTHMILL_ALLOW_NONCOMMERCIAL_MODELS=true" in out, out
    monkeypatch.setenv("DEPTHMILL_MODEL", large)  # through the environment: invalid settings
    assert main(["up", "--detach"]) == 2
    assert "DEPTHMILL_ALLOW_NONCOMMERCIAL_MODELS=true" in capsys.readouterr().out
    assert started == []


def test_reprocess_for_a_model_nothing_serves_is_refused_before_submitting(
    tmp_path, monkeypatch, capsys
):
    from ray import job_submission

    monkeypatch.setenv("DEPTHMILL_HOME", str(tmp_path))
    monkeypatch.setenv("DEPTHMILL_MODEL", "tiny")

    def no_client(*a, **k):
        raise AssertionError("the job was submitted")

    monkeypatch.setattr(job_submission, "JobSubmissionClient", no_client)
    assert main(["reprocess", "--address", "http://127.0.0.1:1", "--model", "other/model"]) == 1
    assert main(["reprocess", "--address", "http://127.0.0.1:1", "--model=other/model"]) == 1
    out = capsys.readouterr().out
    assert "'other/model'" in out and "serves 'tiny'" in out


def test_up_stops_what_it_started_when_the_model_does_not_load(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(runtime, "cluster_address", lambda temp_dir=None: None)
    monkeypatch.setattr(runtime, "migrate", lambda url: None)
    monkeypatch.setattr(runtime, "connect_ray", lambda settings, start=True: True)  # a new head
    monkeypatch.setattr(runtime, "start_serve", lambda settings: None)
    monkeypatch.setattr(runtime.serve, "run", lambda *a, **k: None)
    monkeypatch.setattr(runtime, "get_or_start_scheduler", lambda s: calls.append("scheduler"))
    monkeypatch.setattr(runtime, "down", lambda settings: calls.append("down"))

    def failed(name):
        raise RuntimeError(
            "Serve application depthmill failed: Failed to update the deployments ['DepthModel']."
            "\nTraceback (most recent call last):\n  ...\ncluster.model.core.ModelLoadError: could "
            "not load depth model 'some/unknown-id': We couldn't connect to the Hub.\n  more")

    monkeypatch.setattr(runtime, "_wait_for_app", failed)
    settings = runtime.Settings(home=tmp_path, model="some/unknown-id",
                                database_url="postgresql://unused/x")
    with pytest.raises(runtime.ModelUnavailable) as raised:
        runtime.up(settings)
    message = str(raised.value)
    assert "\n" not in message and "some/unknown-id" in message and "couldn't connect" in message
    assert "--model tiny" in message
    assert calls == ["down"]  # the Ray head it started is stopped; no scheduler was started


def test_model_choice_among_several_served_ones(a_running_scheduler_for, tmp_path, monkeypatch,
                                                capsys):
    from ray import job_submission

    monkeypatch.setenv("DEPTHMILL_HOME", str(tmp_path))
    monkeypatch.setenv("DEPTHMILL_MODEL", "tiny")
    monkeypatch.setenv("DEPTHMILL_MODELS", "tiny,tiny:2")
    started = a_running_scheduler_for("tiny")
    photo = tmp_path / "a.jpg"
    photo.write_bytes(media_files.jpeg_bytes(media_files.photo("coffee")))
    for argv in (["up", "--model", "tiny:3", "--detach"], ["process", "--model", "tiny:3",
                                                            str(photo)]):
        assert main(argv) == 2
        out = capsys.readouterr().out
        assert "'tiny:3' is not served here; served: 'tiny', 'tiny:2'" in out, out
    # A live scheduler serving only tiny cannot take tiny:2's items.
    with pytest.raises(runtime.ModelConflict, match="already running for model 'tiny'"):
        runtime.up(runtime.Settings(home=tmp_path).with_model("tiny:2"))
    assert started == []

    def submitted(*a, **k):
        raise ConnectionError("submitted")  # as far as this test goes

    monkeypatch.setattr(job_submission, "JobSubmissionClient", submitted)
    assert main(["reprocess", "--address", "http://127.0.0.1:1", "--model", "tiny:3"]) == 1
    assert "serves 'tiny', 'tiny:2'" in capsys.readouterr().out
    with pytest.raises(ConnectionError, match="submitted"):
        main(["reprocess", "--address", "http://127.0.0.1:1", "--model", "tiny:2"])
