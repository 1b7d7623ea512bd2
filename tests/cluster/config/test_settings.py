"""A Ray job gets the settings of the command that submitted it, not its own environment."""

from __future__ import annotations

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
