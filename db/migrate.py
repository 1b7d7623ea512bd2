"""Versioned plain-SQL migrations: ``db/migrations/NNN_name.sql``, applied in order, recorded.

Safe to run twice and from several processes at once: a transaction-scoped advisory lock
serialises migrators, and each file runs in the same transaction as its ``schema_migrations`` row.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

# Any constant works as long as every migrator uses the same one ("depthmill" in ASCII).
MIGRATION_LOCK_KEY = 0x6465707468

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_FILE_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The migrations shipped with the package, in version order."""
    found = []
    for entry in MIGRATIONS_DIR.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


def migrate(conninfo: str, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply every migration not yet recorded; return the ones applied by this call."""
    migrations = load_migrations() if migrations is None else migrations
    applied: list[Migration] = []
    with psycopg.connect(conninfo, autocommit=False) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK_KEY])
            conn.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    integer PRIMARY KEY,
                    name       text NOT NULL,
                    checksum   text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            done = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        log.warning(
                            "migration %03d_%s changed since it was applied; not re-running it",
                            migration.version,
                            migration.name,
                        )
                    continue
                log.info("applying migration %03d_%s", migration.version, migration.name)
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    [migration.version, migration.name, migration.checksum],
                )
                applied.append(migration)
    return applied


def applied_versions(conninfo: str) -> list[int]:
    with psycopg.connect(conninfo) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
        if not exists:
            return []
        return [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
