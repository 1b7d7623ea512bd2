"""``depthmill keys``: create (the key once, and one the gateway accepts), list (never the
secret), revoke; and a one-sentence answer to each mistake."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cluster.cli import main
from cluster.config.settings import Settings
from db import keys
from serve_app.api.main import create_api
from serve_app.gateway import build_context


@pytest.fixture
def cli_env(database_url, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHMILL_HOME", str(tmp_path))
    monkeypatch.setenv("DEPTHMILL_DATABASE_URL", database_url)


def test_create_list_revoke(cli_env, database_url, tmp_path, db, capsys):
    assert main(["keys", "create", "--name", "ci", "--scope", "read,write", "--expires", "90d"]) == 0
    out = capsys.readouterr().out
    key = out.strip().splitlines()[-1]
    assert keys.looks_like_key(key) and "shown once" in out
    (made,) = db.run(keys.list_keys)
    assert made.scopes == ["read", "write"] and made.expires_at is not None

    # The gateway, with the same home, takes the key the command made.
    settings = Settings(home=tmp_path, database_url=database_url, model="tiny", api_key_cache_s=0)
    app = create_api()
    app.state.ctx = ctx = build_context(settings)
    try:
        with TestClient(app) as client:
            auth = {"Authorization": f"Bearer {key}"}
            assert client.get("/api/media", headers=auth).status_code == 200
            assert client.get("/api/keys", headers=auth).status_code == 403
            assert main(["keys", "list"]) == 0
            listed = capsys.readouterr().out
            assert "ci" in listed and made.prefix in listed and "live" in listed
            assert key not in listed and key.rsplit("_", 1)[1] not in listed
            assert main(["keys", "revoke", "ci"]) == 0
            assert "revoked key ci" in capsys.readouterr().out
            assert client.get("/api/media", headers=auth).status_code == 401
            assert main(["keys", "list"]) == 0
            assert "revoked" in capsys.readouterr().out
    finally:
        ctx.ingest_pool.shutdown()
        ctx.event_wake.close()
        ctx.db.close()


def test_mistakes_say_what_to_do(cli_env, capsys):
    with pytest.raises(SystemExit):
        main(["keys", "create", "--name", "x", "--scope", "read,root"])
    assert "unknown scope root" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["keys", "create", "--name", "x", "--scope", "read", "--expires", "soon"])
    assert "e.g. 90d" in capsys.readouterr().err
    assert main(["keys", "revoke", "nobody"]) == 1
    assert "depthmill keys list" in capsys.readouterr().out
    assert main(["keys", "create", "--name", "twice", "--scope", "admin"]) == 0
    assert main(["keys", "create", "--name", "twice", "--scope", "admin"]) == 1
    assert "already named 'twice'" in capsys.readouterr().out
