"""Settings: a Ray job gets those of the command that submitted it; the licence gate; custom
resources."""

from __future__ import annotations

import pytest

from cluster.cli.reprocess import job_env
from cluster.config.settings import JOB_SETTINGS_ENV, Settings


def test_a_job_gets_the_submitting_settings_secret_included(tmp_path, monkeypatch):
    submitted = Settings(home=tmp_path, model="tiny", signing_secret="s3cret", max_attempts=7,
                         cors_origins=["http://a.example"])
    env = job_env(submitted)
    assert set(env) == {JOB_SETTINGS_ENV}
    monkeypatch.setenv(JOB_SETTINGS_ENV, env[JOB_SETTINGS_ENV])
    # The job's own environment says otherwise; the handed settings win whole.
    monkeypatch.setenv("DEPTHMILL_MODEL", "something-else")
    monkeypatch.setenv("DEPTHMILL_MAX_ATTEMPTS", "2")
    received = Settings.for_job()
    assert received == submitted
    assert received.signing_secret.get_secret_value() == "s3cret"


def test_a_job_run_by_hand_reads_its_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(JOB_SETTINGS_ENV, raising=False)
    monkeypatch.setenv("DEPTHMILL_HOME", str(tmp_path))
    monkeypatch.setenv("DEPTHMILL_MODEL", "tiny")
    assert Settings.for_job().model == "tiny"


def test_noncommercial_models_need_consent_and_the_refusal_says_why(tmp_path, monkeypatch):
    for model in ("depth-anything/Depth-Anything-V2-Base-hf",
                  "depth-anything/Depth-Anything-V2-Large-hf"):
        with pytest.raises(ValueError) as refused:
            Settings(home=tmp_path, model=model)
        message = str(refused.value)
        assert "CC-BY-NC-4.0" in message and "non-commercial" in message
        assert "DEPTHMILL_ALLOW_NONCOMMERCIAL_MODELS=true" in message
        assert Settings(home=tmp_path, model=model, allow_noncommercial_models=True).model == model
    monkeypatch.setenv("DEPTHMILL_MODEL", "depth-anything/Depth-Anything-V2-Large-hf")
    monkeypatch.setenv("DEPTHMILL_ALLOW_NONCOMMERCIAL_MODELS", "true")
    assert Settings(home=tmp_path).allow_noncommercial_models
    # Small (Apache-2.0), tiny and models depthmill knows nothing of need no consent.
    for model in ("depth-anything/Depth-Anything-V2-Small-hf", "tiny", "someone/else"):
        assert Settings(home=tmp_path, model=model).model == model


def test_several_served_models_each_checked_with_the_default_among_them(tmp_path, monkeypatch):
    import pytest

    from cluster.config.models import served_models

    assert served_models(Settings(home=tmp_path, model="tiny")) == ["tiny"]  # MODEL alone
    monkeypatch.setenv("DEPTHMILL_MODELS", "tiny, tiny:2")
    both = Settings(home=tmp_path, model="tiny")
    assert served_models(both) == ["tiny", "tiny:2"] and both.models_per_replica == 2
    assert Settings(home=tmp_path, model="tiny:2",
                    serve_max_models_per_replica=1).models_per_replica == 1
    monkeypatch.delenv("DEPTHMILL_MODELS")
    with pytest.raises(ValueError, match="DEPTHMILL_MODEL 'tiny:3'.*not among DEPTHMILL_MODELS"):
        Settings(home=tmp_path, model="tiny:3", models=["tiny", "tiny:2"])
    with pytest.raises(ValueError, match="tiny:SEED"):
        Settings(home=tmp_path, model="tiny", models=["tiny", "tiny:two"])
    with pytest.raises(ValueError, match="names a model twice"):
        Settings(home=tmp_path, model="tiny", models=["tiny", "tiny"])
    large = "depth-anything/Depth-Anything-V2-Large-hf"
    with pytest.raises(ValueError) as refused:  # a served model that is not the default
        Settings(home=tmp_path, model="tiny", models=["tiny", large])
    assert large in str(refused.value) and "DEPTHMILL_ALLOW_NONCOMMERCIAL_MODELS=true" in str(
        refused.value)
    allowed = Settings(home=tmp_path, model="tiny", models=["tiny", large],
                       allow_noncommercial_models=True)
    assert served_models(allowed) == ["tiny", large]


def test_every_tiny_variant_is_random_weights_and_others_are_refused_by_name():
    import pytest

    from cluster.config.models import TINY_LICENCE, BadModelName, licence_of, tiny_seed

    assert [tiny_seed(m) for m in ("tiny", "tiny:0", "tiny:2", "tinyish", "x/tiny")] == [
        0, 0, 2, None, None]
    assert licence_of("tiny:2") == TINY_LICENCE
    for bad in ("tiny:", "tiny:-1", "tiny:1.5", f"tiny:{2**32}"):
        with pytest.raises(BadModelName, match="tiny:SEED"):
            tiny_seed(bad)


def test_custom_resources_are_read_as_json_and_builtin_ones_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHMILL_SERVE_RESOURCES", '{"depth_node": 1}')
    monkeypatch.setenv("DEPTHMILL_TASK_RESOURCES", '{"work_node": 0.01}')
    settings = Settings(home=tmp_path, model="tiny")
    assert settings.serve_resources == {"depth_node": 1.0}
    assert settings.task_resources == {"work_node": 0.01}
    assert settings.scheduler_resources == {}
    for wrong, says in (({"GPU": 1}, "GPU cannot be set here"), ({"work_node": -1}, "0 or more")):
        with pytest.raises(ValueError, match=says):
            Settings(home=tmp_path, model="tiny", scheduler_resources=wrong)
