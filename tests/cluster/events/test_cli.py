"""``depthmill webhooks``: add (secret once), list, test, remove, and a one-sentence answer to
each mistake."""

from __future__ import annotations

import uuid

import pytest

from cluster.cli import main
from db import webhooks


@pytest.fixture
def cli_env(database_url, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHMILL_HOME", str(tmp_path))
    monkeypatch.setenv("DEPTHMILL_DATABASE_URL", database_url)


def test_add_list_test_remove(cli_env, db, capsys, monkeypatch):
    monkeypatch.setenv("DEPTHMILL_WEBHOOK_ALLOW_PRIVATE", "true")
    assert main(["webhooks", "add", "http://127.0.0.1:9/hook", "--events",
                 "item.completed,item.failed", "--description", "mine"]) == 0
    out = capsys.readouterr().out
    assert "signing secret (shown once" in out and "whsec_" in out
    (hook,) = db.run(webhooks.list_webhooks)
    assert hook.events == ["item.completed", "item.failed"]
    assert main(["webhooks", "list"]) == 0
    listed = capsys.readouterr().out
    assert str(hook.id) in listed and "whsec_" not in listed
    assert main(["webhooks", "test", str(hook.id)]) == 0
    assert "webhook.test" in capsys.readouterr().out
    assert db.run(webhooks.list_deliveries, hook.id).items[0].event_type == "webhook.test"
    assert main(["webhooks", "remove", str(hook.id)]) == 0
    assert db.run(webhooks.list_webhooks) == []
    assert main(["webhooks", "list"]) == 0
    assert "no webhooks" in capsys.readouterr().out


def test_mistakes_say_what_to_do(cli_env, capsys):
    assert main(["webhooks", "add", "http://127.0.0.1/x", "--events", "item.completed"]) == 2
    out = capsys.readouterr().out
    assert "loopback" in out and "DEPTHMILL_WEBHOOK_ALLOW_PRIVATE" in out
    assert main(["webhooks", "add", "https://93.184.216.34/x", "--events", "item.nope"]) == 2
    assert "unknown event type" in capsys.readouterr().out
    assert main(["webhooks", "add", "ftp://example.com/x", "--events", "*"]) == 2
    assert "such as https://" in capsys.readouterr().out
    assert main(["webhooks", "remove", str(uuid.uuid4())]) == 1
    assert "depthmill webhooks list" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["webhooks", "test", "not-an-id"])
    assert "not a webhook id" in capsys.readouterr().err
