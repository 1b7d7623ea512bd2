"""``depthmill audit``: the newest entries, oldest first, narrowed by --since and --key."""

from __future__ import annotations

import pytest

from cluster.cli import main
from db import audit


@pytest.fixture
def cli_env(database_url, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHMILL_HOME", str(tmp_path))
    monkeypatch.setenv("DEPTHMILL_DATABASE_URL", database_url)


def test_audit_lists_entries_and_says_when_there_are_none(cli_env, db, capsys):
    assert main(["audit"]) == 0
    assert "no audit entries" in capsys.readouterr().out
    for name, status in (("ci", 200), ("viewer", 403)):
        db.run(audit.record, audit.NewEntry(name, None, "10.1.2.3", "POST", "/api/media/upload",
                                            None, None, status))
    db.run(lambda conn: conn.execute("UPDATE audit_log SET at = now() - interval '3 days' "
                                     "WHERE key_name = 'ci'"))
    assert main(["audit"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "by ci from 10.1.2.3" in lines[0] and " 403 " in lines[1]
    assert main(["audit", "--since", "1d"]) == 0
    assert "by ci" not in capsys.readouterr().out
    assert main(["audit", "--key", "ci", "--limit", "1"]) == 0
    assert "by ci" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["audit", "--since", "last tuesday"])
    assert "span back from now" in capsys.readouterr().err
