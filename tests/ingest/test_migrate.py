"""Migrations: in order, once, under concurrency; the schema's own rules (DESIGN.md section 4)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal

import psycopg
import pytest

from ingest.alerts import ALERT_KINDS
from ingest.migrate import Migration, load_migrations, migrate, timescaledb_available
from ingest.store import DatabaseUnavailable
from ingest.verification import RULES
from metergate.cli import main
from metergate.errors import StorageError
from tests.ingest.services import free_port

PLAIN = [m.name for m in load_migrations() if not m.timescaledb]
TIMESCALE = [m for m in load_migrations() if m.timescaledb]


def applied_versions(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return [
            (int(version), str(name))
            for version, name in conn.execute(
                "SELECT version, name FROM schema_migrations ORDER BY version"
            )
        ]


def test_the_package_ships_numbered_migrations_with_a_timescaledb_step() -> None:
    migrations = load_migrations()
    versions = [m.version for m in migrations]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    assert PLAIN[:2] == ["0001_meters", "0002_readings"]
    assert [m.name for m in TIMESCALE] == ["0007_readings_hypertable"]


def test_applies_each_migration_once_in_order(create_database: Callable[[], str]) -> None:
    url = create_database()
    assert migrate(url) == PLAIN
    assert migrate(url) == []
    assert [name for _, name in applied_versions(url)] == PLAIN


def test_concurrent_runners_apply_everything_exactly_once(
    create_database: Callable[[], str],
) -> None:
    url = create_database()
    start = threading.Barrier(4)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def runner() -> None:
        start.wait()
        try:
            results.append(migrate(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=runner) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(results, key=len) == [[], [], [], PLAIN]
    assert [name for _, name in applied_versions(url)] == PLAIN


def test_a_failing_migration_rolls_back_alone_and_stops_the_run(
    create_database: Callable[[], str],
) -> None:
    url = create_database()
    steps = [
        Migration(1, "0001_first", "CREATE TABLE first (a int);", timescaledb=False),
        Migration(
            2, "0002_broken", "CREATE TABLE second (a int); SELECT 1 / 0;", timescaledb=False
        ),
        Migration(3, "0003_third", "CREATE TABLE third (a int);", timescaledb=False),
    ]
    with pytest.raises(StorageError, match="division by zero"):
        migrate(url, steps)
    assert applied_versions(url) == [(1, "0001_first")]
    with psycopg.connect(url) as conn:
        tables = {
            row[0]
            for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert {"first", "second", "third"} & tables == {"first"}


def test_a_changed_applied_migration_is_refused(create_database: Callable[[], str]) -> None:
    url = create_database()
    first = Migration(1, "0001_first", "CREATE TABLE first (a int);", timescaledb=False)
    migrate(url, [first])
    edited = Migration(1, "0001_first", "CREATE TABLE first (a bigint);", timescaledb=False)
    with pytest.raises(StorageError, match="0001_first was changed after it was applied"):
        migrate(url, [edited])


def test_an_unreachable_database_is_reported_as_unavailable() -> None:
    with pytest.raises(DatabaseUnavailable):
        migrate(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=2")


def test_timescaledb_step_runs_only_where_the_extension_exists(migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        available = timescaledb_available(conn)
        hypertables = 0
        if available:
            row = conn.execute(
                "SELECT count(*) FROM timescaledb_information.hypertables"
                " WHERE hypertable_name = 'readings'"
            ).fetchone()
            hypertables = row[0] if row else 0
        else:
            extension = conn.execute(
                "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
            ).fetchone()
            assert extension == (0,)
    versions = [version for version, _ in applied_versions(migrated_url)]
    assert (TIMESCALE[0].version in versions) == available
    assert hypertables == (1 if available else 0)


def test_a_pending_timescaledb_step_is_skipped_without_the_extension_and_not_recorded(
    create_database: Callable[[], str],
) -> None:
    url = create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        if timescaledb_available(conn):
            pytest.skip("this PostgreSQL has TimescaleDB: the plain path is not taken here")
    step = Migration(1, "0001_hyper", "SELECT no_such_function();", timescaledb=True)
    plain = Migration(2, "0002_plain", "CREATE TABLE plain (a int);", timescaledb=False)
    assert migrate(url, [step, plain]) == ["0002_plain"]
    assert applied_versions(url) == [(2, "0002_plain")]


def test_the_timescaledb_step_is_valid_sql_that_needs_only_the_extension(
    migrated_url: str,
) -> None:
    # PostgreSQL parses the whole multi-statement text before running any of it, so failing on
    # the missing create_hypertable (and not a syntax error) shows all of it parses.
    with psycopg.connect(migrated_url) as conn:
        if timescaledb_available(conn):
            pytest.skip("TimescaleDB is installed: the step itself has run")
        with pytest.raises(psycopg.errors.UndefinedFunction, match="create_hypertable"):
            conn.execute(TIMESCALE[0].sql.encode())


def test_alert_kinds_are_the_engines_kinds_and_one_alert_per_rule_is_open(db: str) -> None:
    opened = datetime(2026, 3, 1, tzinfo=UTC)
    insert = "INSERT INTO alerts (meter_id, kind, rule, opened_at) VALUES (%s, %s, %s, %s)"
    with psycopg.connect(db, autocommit=True) as conn:
        for kind in sorted(ALERT_KINDS):
            conn.execute(insert, ("KAM-00000001", kind, "r", opened))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(insert, ("KAM-00000001", "flood", "r", opened))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, ("KAM-00000001", "leak", "r", opened))
        conn.execute(insert, ("KAM-00000001", "leak", "another rule", opened))
        conn.execute(
            "UPDATE alerts SET closed_at = %s WHERE kind = 'leak' AND rule = 'r'", (opened,)
        )
        conn.execute(insert, ("KAM-00000001", "leak", "r", opened))


def test_monthly_revisions_are_kept_and_checked(db: str) -> None:
    row = (
        "KAM-00000001",
        date(2026, 3, 1),
        datetime(2026, 3, 31, 21, tzinfo=UTC),
        "12.345",
        "m3",
        "estimated",
        "{}",
    )
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO monthly_readings (meter_id, period, boundary, value, unit, method,"
            " evidence) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            row,
        )
        conn.execute("UPDATE monthly_readings SET exported_at = now()")
        with pytest.raises(psycopg.errors.RaiseException, match="needs revision 2"):
            conn.execute("UPDATE monthly_readings SET value = 12.5, method = 'actual'")
        with pytest.raises(psycopg.errors.RaiseException, match=r"next revision .* is 2, not 3"):
            conn.execute("UPDATE monthly_readings SET value = 12.5, revision = 3")
        conn.execute("UPDATE monthly_readings SET value = 12.500, method = 'actual', revision = 2")
        current = conn.execute("SELECT value, revision, exported_at FROM monthly_readings")
        assert current.fetchall() == [(Decimal("12.500"), 2, None)]
        history = conn.execute(
            "SELECT revision, value, method, exported_at IS NOT NULL"
            " FROM monthly_reading_revisions ORDER BY revision"
        ).fetchall()
    assert [(r, str(v), m, e) for r, v, m, e in history] == [
        (1, "12.345", "estimated", True),
        (2, "12.500", "actual", False),
    ]


def test_a_meter_key_is_sixteen_bytes(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO meter_keys (meter_id, key) VALUES (%s, %s)", ("A-1", bytes(16)))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO meter_keys (meter_id, key) VALUES (%s, %s)", ("A-2", bytes(15))
            )


def test_verification_rules_are_seeded_as_the_engine_has_them(migrated_url: str) -> None:
    with psycopg.connect(migrated_url) as conn:
        table = set(
            conn.execute(
                "SELECT country, medium, kind, interval_years, source FROM verification_rules"
            )
        )
    assert table == {(r.country, r.medium, r.kind, r.years, r.source) for r in RULES}
    assert ("LV", "water", "*", 4, "LV Cabinet Regulation No. 289 (2024)") in table


def test_db_migrate_command(
    create_database: Callable[[], str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = create_database()
    assert main(["db", "migrate", "--database-url", url]) == 0
    assert capsys.readouterr().out.split() == PLAIN
    assert main(["db", "migrate", "--database-url", url]) == 0
    assert capsys.readouterr().out == "the database is up to date\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "no database URL"),
        (["--database-url", "postgresql://postgres@127.0.0.1:{port}/x"], 1, "unavailable"),
        (["--database-url", "no_such_option=1"], 1, "no_such_option"),
    ],
)
def test_db_migrate_bad_input(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    args = [arg.format(port=free_port()) for arg in args]
    assert main(["db", "migrate", *args]) == code
    assert message in capsys.readouterr().err
