"""The engines against PostgreSQL: `metergate monthly fill` (ingest.engine_run.run_engines) for a
fleet of meters with a month of hourly readings each (bench/engines.py's series: October 2026 in
Riga, one meter in twenty leaking at night, one in ten with a gap before the month end).

It makes a database of its own on the PostgreSQL of METERGATE_BENCH_DATABASE_URL (default: the
local one, user postgres), fills it with COPY, times a first fill (everything new), a second
one (nothing changes), the second one again over as many processes as there are cores
(`metergate monthly fill --jobs`; the database shares those cores here) and the worker's
incremental run (changed since the last day), then drops the database.

    .venv/bin/python bench/engine_run.py [--meters 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.engines import END, ZONE, meter_rows
from ingest.engine_pool import run_engines_parallel
from ingest.engine_run import EngineReport, run_engines
from ingest.migrate import migrate
from ingest.store import READING_COLUMNS, READING_TYPES, copy_rows

ADMIN_URL = os.environ.get(
    "METERGATE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NOW = datetime(2026, 11, 20, tzinfo=UTC)


def fill(url: str, meters: int) -> int:
    readings = 0
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        ids = [f"BEN-{index:08d}" for index in range(meters)]
        cur.execute(
            "INSERT INTO meters (meter_id, medium, country, verified_on, status)"
            " SELECT unnest(%s::text[]), 'water', 'LV', '2023-01-15', 'active'",
            (ids,),
        )
        for index, meter_id in enumerate(ids):
            rows = [
                (meter_id, "volume", 0, 0, 0, "instantaneous", at, value, "m3", at, "gw-01",
                 "wmbus", f"gw-01:{meter_id}:{n}")
                for n, (at, value) in enumerate(meter_rows(index))
            ]  # fmt: skip
            copy_rows(cur, "readings", READING_COLUMNS, READING_TYPES, rows)
            readings += len(rows)
    return readings


def timed(what: str, url: str, meters: int, jobs: int = 1, **options: object) -> EngineReport:
    started = time.perf_counter()
    if jobs > 1:
        report = run_engines_parallel(url, jobs=jobs, now=NOW, zone=ZONE)
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            report = run_engines(conn, now=NOW, zone=ZONE, **options)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    print(f"{what}: {seconds:.2f} s, {seconds / meters * 1e3:.2f} ms per meter")
    print(f"  {report.summary()}")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000)
    args = parser.parse_args()
    name = f"metergate_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(ADMIN_URL, dbname=name)
    try:
        migrate(url)
        started = time.perf_counter()
        readings = fill(url, args.meters)
        copied = time.perf_counter() - started
        print(f"meters: {args.meters}, readings: {readings} (COPY {copied:.1f} s)")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE readings")
        timed("first fill (every closed period new)", url, args.meters)
        timed("second fill (nothing changes)", url, args.meters)
        jobs = os.cpu_count() or 1
        timed(f"second fill over {jobs} processes (--jobs {jobs})", url, args.meters, jobs)
        since = dict.fromkeys((f"BEN-{i:08d}" for i in range(args.meters)), END - timedelta(days=1))
        timed("incremental run (changed in the last day)", url, args.meters, changed_since=since)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
