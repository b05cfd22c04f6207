"""`run_engines` for every registered meter over several processes (`metergate monthly fill
--jobs N`).

A full fill costs about 10 ms per meter on one core (bench/engine_run.py), most of it Python
around the meter's readings, so 100,000 meters take a quarter of an hour in one process; the
meters are independent (each runs in a transaction of its own under an advisory lock), so the
work splits across processes with a connection each. Chunks are small and handed out as
processes finish, so a slow chunk does not leave the other processes idle at the end.

The processes are spawned, not forked: a fork of a process holding psycopg connections or
threads can inherit a lock held mid-operation.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import date, datetime
from functools import partial
from zoneinfo import ZoneInfo

import psycopg

from ingest import engine_sql as db
from ingest.engine_run import EngineReport, run_engines
from metergate.errors import StorageError

TASK_MAX = 200  # meters a process takes at a time


def run_engines_parallel(
    conninfo: str,
    *,
    jobs: int,
    now: datetime,
    zone: ZoneInfo,
    periods: Sequence[date] | None = None,
) -> EngineReport:
    """The report of `run_engines` over every registered meter, done by `jobs` processes."""
    if jobs < 1:
        raise ValueError("at least one process")
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        ids = db.registered_meters(conn)
    # Several chunks a process, however few meters: the last ones then finish together.
    size = max(1, min(TASK_MAX, len(ids) // (jobs * 4)))
    chunks = [ids[start : start + size] for start in range(0, len(ids), size)]
    if jobs == 1 or len(chunks) <= 1:
        return sum(map(partial(_run_chunk, conninfo, now, zone, periods), chunks), EngineReport())
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(min(jobs, len(chunks)), mp_context=context) as pool:
            reports = pool.map(partial(_run_chunk, conninfo, now, zone, periods), chunks)
            return sum(reports, EngineReport())
    except BrokenProcessPool as exc:  # killed (the OOM killer, a signal): say so, not a trace
        raise StorageError(f"a process of the fill died: {exc}") from None


def _run_chunk(
    conninfo: str,
    now: datetime,
    zone: ZoneInfo,
    periods: Sequence[date] | None,
    meter_ids: list[str],
) -> EngineReport:
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        return run_engines(conn, meter_ids=meter_ids, periods=periods, now=now, zone=zone)
