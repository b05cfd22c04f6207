"""Versioned SQL migrations of the ingest's database (DESIGN.md section 4).

The migrations are the files `ingest/migrations/NNNN_name.sql`, applied in order of NNNN, each
in its own transaction, and recorded in `schema_migrations` with a checksum of their text. A
file named `NNNN_name.timescaledb.sql` is applied only where `CREATE EXTENSION timescaledb`
succeeds; elsewhere it is skipped and stays pending, so a database that gains the extension
later gets it on the next run.

Two ingest workers starting at once must not both apply a migration: the whole run holds a
session-level advisory lock, and the second runner finds the work done when it gets the lock.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from ingest.store import DatabaseUnavailable
from metergate.errors import StorageError

log = logging.getLogger(__name__)

# pg_advisory_lock key shared by every runner of these migrations: b"metergat" as an integer.
ADVISORY_LOCK_KEY = int.from_bytes(b"metergat", "big")

_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)(\.timescaledb)?\.sql")

_CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    timescaledb: bool

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> tuple[Migration, ...]:
    """The migrations shipped in the package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("ingest").joinpath("migrations").iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match is None:
            if entry.name.endswith(".sql"):
                raise StorageError(f"migration file {entry.name} is not named NNNN_name.sql")
            continue
        found.append(
            Migration(
                version=int(match[1]),
                name=f"{match[1]}_{match[2]}",
                sql=entry.read_text(encoding="utf-8"),
                timescaledb=match[3] is not None,
            )
        )
    found.sort(key=lambda migration: migration.version)
    for before, after in itertools.pairwise(found):
        if before.version == after.version:
            raise StorageError(f"two migrations have version {before.version}")
    return tuple(found)


def timescaledb_available(conn: psycopg.Connection[Any]) -> bool:
    """Whether the timescaledb extension is (or can now be) installed in this database.

    Tries `CREATE EXTENSION IF NOT EXISTS timescaledb` in a transaction of its own that is kept
    when it succeeds. Not installed on the server, not preloaded, or not allowed to this role
    all mean False; a lost connection is a StorageError.
    """
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        if conn.broken or conn.closed:
            raise DatabaseUnavailable(f"lost the database connection: {exc}") from exc
        log.info("TimescaleDB is not available (%s); readings stay a plain table", exc.sqlstate)
        return False
    return True


def migrate(conninfo: str, migrations: Sequence[Migration] | None = None) -> list[str]:
    """Apply the pending migrations (by default the package's); return the names of those
    applied, in order.

    Raises DatabaseUnavailable (a StorageError) when the database cannot be reached or the
    connection is lost, and StorageError when a migration fails (its transaction is rolled
    back, the ones before it stay) or an applied migration's file has changed since (a schema
    must not differ between databases that claim the same version).
    """
    if migrations is None:
        migrations = load_migrations()
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
            try:
                return _apply_pending(conn, migrations)
            finally:
                if not conn.broken:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"database unavailable: {exc}") from exc
    except psycopg.Error as exc:
        raise StorageError(f"database migration failed: {exc}") from exc


def _apply_pending(conn: psycopg.Connection[Any], migrations: Sequence[Migration]) -> list[str]:
    conn.execute(_CREATE_SCHEMA_MIGRATIONS)
    applied = {
        int(version): str(checksum)
        for version, checksum in conn.execute("SELECT version, checksum FROM schema_migrations")
    }
    for migration in migrations:
        checksum = applied.get(migration.version)
        if checksum is not None and checksum != migration.checksum:
            raise StorageError(
                f"migration {migration.name} was changed after it was applied;"
                " add a new migration instead"
            )
    pending = [migration for migration in migrations if migration.version not in applied]
    timescaledb: bool | None = None
    done: list[str] = []
    for migration in pending:
        if migration.timescaledb:
            if timescaledb is None:
                timescaledb = timescaledb_available(conn)
            if not timescaledb:
                continue
        with conn.transaction():
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
        log.info("applied migration %s", migration.name)
        done.append(migration.name)
    return done
