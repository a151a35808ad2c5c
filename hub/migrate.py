"""Plain, numbered SQL migrations (``hub/migrations/NNN_name.sql``), applied in order.

Each file runs in its own transaction together with its row in ``schema_migrations``;
an advisory lock keeps two hubs starting at once from racing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg
import structlog
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

log = structlog.get_logger(__name__)

_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x77617265  # "ware"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    found = []
    for entry in resources.files("warelink.hub").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number: {versions}")
    return found


def ensure_database(db_url: str) -> bool:
    """Create the database named in ``db_url`` if it does not exist; True if created."""
    params = conninfo_to_dict(db_url)
    name = str(params.get("dbname") or "postgres")
    admin = make_conninfo(db_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def migrate(db_url: str) -> list[Migration]:
    """Apply the migrations not yet applied; returns those it applied."""
    if ensure_database(db_url):
        log.info("migrate.database_created", db=conninfo_to_dict(db_url).get("dbname"))
    applied: list[Migration] = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version int PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in available():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                log.info("migrate.applied", version=migration.version, name=migration.name)
                applied.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied


def unapplied(done: set[int]) -> list[int]:
    """Versions of the available migrations not in ``done``."""
    return [m.version for m in available() if m.version not in done]
