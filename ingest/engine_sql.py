"""The database side of the engines: what ingest.engine_run reads and writes, as queries.

Every function takes a connection inside the caller's transaction and reads or writes one
meter's rows. Instants come back as UTC (whatever the session's TimeZone), values as Decimal.
The meter's volume index is the `readings` rows of quantity `volume`, tariff 0, subunit 0,
function instantaneous and unit m3 (DESIGN.md section 2 gives volumes in m3): storage 0 is the
index, storage n >= 1 the meter's stored registers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ingest.alerts import AlertChange, OpenAlert
from ingest.monthly_values import MonthlyResult
from ingest.series import Reading, Replacement
from ingest.verification import VerificationRule

# Class key of the per-meter advisory lock (the second key is the meter id's hash): two
# workers running the engines for one meter take turns, so revisions never race.
LOCK_CLASS = int.from_bytes(b"mgen", "big")
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def index_series(meter: str) -> str:
    """The condition on `readings` of a meter's volume index (the series the engines read and
    bill), all storage numbers; `meter` is the SQL giving its id (a parameter, a column)."""
    return (
        f"meter_id = {meter} AND quantity = 'volume' AND tariff = 0 AND subunit = 0"
        " AND function = 'instantaneous' AND unit = 'm3'"
    )


_INDEX = index_series("%(meter)s")

_METER = """
SELECT meter_id, status, medium, kind, meter_class, q3_m3h, country, installed_on, removed_on,
       verified_on, verification_interval_years, next_verification_due
FROM meters WHERE meter_id = %s
"""

# One index range scan per window: with storage fixed the primary key orders by measured_at.
_WINDOW_READINGS = f"""
SELECT r.measured_at, r.value, r.source, r.msg_id, r.implausible
FROM unnest(%(lo)s::timestamptz[], %(hi)s::timestamptz[]) AS w (lo, hi)
CROSS JOIN LATERAL (
    SELECT measured_at, value, source, msg_id, implausible FROM readings
    WHERE {_INDEX} AND storage = 0 AND measured_at >= w.lo AND measured_at < w.hi
) r
"""

_WINDOW_REGISTERS = f"""
SELECT measured_at, value, storage, source, msg_id, implausible FROM readings
WHERE {_INDEX} AND storage >= 1 AND measured_at >= %(lo)s AND measured_at < %(hi)s
"""

_ANCHOR = f"""
SELECT measured_at, value, source, msg_id, implausible FROM readings
WHERE {_INDEX} AND storage = 0 AND source <> 'manual' AND NOT implausible
  AND measured_at < %(before)s
ORDER BY measured_at DESC LIMIT 2
"""

_FIRST_READING = f"SELECT min(measured_at) FROM readings WHERE {_INDEX} AND storage = 0"

_MANUAL_SUBMISSIONS = """
SELECT measured_at, min(id) FROM manual_submissions WHERE meter_id = %s GROUP BY measured_at
"""

_SET_IMPLAUSIBLE = f"""
UPDATE readings SET implausible = v.flag
FROM unnest(%(at)s::timestamptz[], %(flag)s::boolean[]) AS v (at, flag)
WHERE {_INDEX} AND storage = 0 AND measured_at = v.at AND implausible <> v.flag
"""

_REPLACEMENTS = """
SELECT id, replaced_at, old_meter_id, old_final, new_meter_id, new_start, detected
FROM meter_replacements WHERE old_meter_id = %(meter)s OR new_meter_id = %(meter)s
ORDER BY replaced_at, id
"""

_INSERT_DETECTED = """
INSERT INTO meter_replacements
    (replaced_at, old_meter_id, old_final, new_meter_id, new_start, detected)
VALUES (%s, %s, %s, %s, %s, true)
ON CONFLICT (old_meter_id, replaced_at) DO NOTHING
"""

_DELETE_DETECTED = "DELETE FROM meter_replacements WHERE id = ANY(%s) AND detected"

_MONTHLY = """
SELECT period, boundary, value, unit, method, evidence, revision FROM monthly_readings
WHERE meter_id = %s AND period = ANY(%s)
"""

_INSERT_MONTHLY = """
INSERT INTO monthly_readings (meter_id, period, boundary, value, unit, method, evidence,
                              computed_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
"""

_REVISE_MONTHLY = """
UPDATE monthly_readings
SET boundary = %s, value = %s, unit = %s, method = %s, evidence = %s, computed_at = %s,
    revision = revision + 1
WHERE meter_id = %s AND period = %s AND revision = %s
"""

_OPEN_ALERTS = "SELECT kind, rule, opened_at FROM alerts WHERE meter_id = %s AND closed_at IS NULL"

# closed_at is never before opened_at, so the later of the two is coalesce(closed, opened).
_LAST_DECISIONS = """
SELECT rule, max(coalesce(closed_at, opened_at)) FROM alerts WHERE meter_id = %s GROUP BY rule
"""

_OPEN_ALERT = """
INSERT INTO alerts (meter_id, kind, rule, opened_at, evidence) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (meter_id, kind, rule) WHERE closed_at IS NULL DO NOTHING
"""

_CLOSE_ALERT = """
UPDATE alerts SET closed_at = %s, evidence = evidence || jsonb_build_object('closed', %s::jsonb)
WHERE meter_id = %s AND kind = %s AND rule = %s AND closed_at IS NULL AND opened_at <= %s
"""

_FIRST_FLAGGED = """
SELECT min(reported_at) FROM meter_status
WHERE meter_id = %s AND reported_at > %s AND flags && %s::text[]
"""

_STATUS_REPORTS = """
SELECT reported_at, flags, raw FROM meter_status
WHERE meter_id = %s AND reported_at >= %s ORDER BY reported_at, msg_id
"""

_RULES = "SELECT country, medium, kind, interval_years, source FROM verification_rules"

_SET_DUE = """
UPDATE meters SET next_verification_due = %s, updated_at = now()
WHERE meter_id = %s AND next_verification_due IS DISTINCT FROM %s
"""

_REGISTERED = "SELECT meter_id FROM meters WHERE status <> 'unregistered' ORDER BY meter_id"

_MISSING_MONTHLY = """
SELECT m.meter_id FROM meters m
WHERE m.status <> 'unregistered'
  AND (m.installed_on IS NULL OR m.installed_on < %(next)s)
  AND (m.removed_on IS NULL OR m.removed_on >= %(next)s)
  AND NOT EXISTS (SELECT 1 FROM monthly_readings r
                  WHERE r.meter_id = m.meter_id AND r.period = %(period)s)
  AND EXISTS (SELECT 1 FROM readings r WHERE r.meter_id = m.meter_id)
ORDER BY m.meter_id
"""


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """The registry row of a meter, as the engines need it."""

    meter_id: str
    status: str
    medium: str | None
    kind: str | None
    meter_class: str | None
    q3_m3h: Decimal | None
    country: str | None
    installed_on: date | None
    removed_on: date | None
    verified_on: date | None
    interval_years: int | None
    next_due: date | None


@dataclass(frozen=True, slots=True)
class StoredReading:
    """A storage-0 or register row, with the implausible mark it has in the database."""

    reading: Reading
    marked: bool


@dataclass(frozen=True, slots=True)
class StoredReplacement:
    id: int
    replacement: Replacement


@dataclass(frozen=True, slots=True)
class StoredMonthly:
    result: MonthlyResult
    revision: int


def utc(instant: datetime) -> datetime:
    return instant.astimezone(UTC)


def lock_meter(conn: psycopg.Connection[Any], meter_id: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, meter_id))


def load_meter(conn: psycopg.Connection[Any], meter_id: str) -> MeterInfo | None:
    row = conn.cursor().execute(_METER, (meter_id,)).fetchone()
    return None if row is None else MeterInfo(*row)


def registered_meters(conn: psycopg.Connection[Any]) -> list[str]:
    return [str(row[0]) for row in conn.cursor().execute(_REGISTERED)]


def meters_missing_period(conn: psycopg.Connection[Any], period: date, next_day: date) -> list[str]:
    """Registered meters with readings, on their premise at the boundary of `period`, that have
    no monthly reading of it."""
    rows = conn.cursor().execute(_MISSING_MONTHLY, {"period": period, "next": next_day})
    return [str(row[0]) for row in rows]


def first_reading_at(conn: psycopg.Connection[Any], meter_id: str) -> datetime | None:
    row = conn.cursor().execute(_FIRST_READING, {"meter": meter_id}).fetchone()
    return None if row is None or row[0] is None else utc(row[0])


def _ref(
    source: str, msg_id: str | None, measured_at: datetime, manual: Mapping[datetime, int]
) -> str | int | None:
    # The row's provenance: the MQTT message, or the manual_submissions row of a typed reading.
    return manual.get(measured_at) if source == "manual" else msg_id


def load_readings(
    conn: psycopg.Connection[Any],
    meter_id: str,
    windows: Sequence[tuple[datetime, datetime]],
    *,
    anchor_before: datetime | None,
) -> list[StoredReading]:
    """The meter's index readings in the half-open `windows` (disjoint, in order), its
    registers between the first window's start and the last one's end, and with
    `anchor_before` the last two unmarked meter readings before that instant (the reading
    screening starts from, and its reference); in time order."""
    cur = conn.cursor()
    manual = {utc(at): int(ref) for at, ref in cur.execute(_MANUAL_SUBMISSIONS, (meter_id,))}
    rows: dict[datetime, tuple[Any, ...]] = {}
    if anchor_before is not None:
        for row in cur.execute(_ANCHOR, {"meter": meter_id, "before": anchor_before}):
            rows[utc(row[0])] = row
    params = {"meter": meter_id, "lo": [w[0] for w in windows], "hi": [w[1] for w in windows]}
    for row in cur.execute(_WINDOW_READINGS, params):
        rows[utc(row[0])] = row  # the anchor may lie in a window too: one row per instant
    out: list[StoredReading] = []
    for at, (_, value, source, msg_id, marked) in rows.items():
        reading = Reading(at, value, 0, source, _ref(source, msg_id, at, manual))
        out.append(StoredReading(reading, bool(marked)))
    span = {"meter": meter_id, "lo": windows[0][0], "hi": windows[-1][1]}
    for stamp, value, storage, source, msg_id, marked in cur.execute(_WINDOW_REGISTERS, span):
        at = utc(stamp)
        reading = Reading(at, value, int(storage), source, _ref(source, msg_id, at, manual))
        out.append(StoredReading(reading, bool(marked)))
    out.sort(key=lambda stored: (stored.reading.measured_at, stored.reading.storage))
    return out


def set_implausible(
    conn: psycopg.Connection[Any], meter_id: str, marks: Mapping[datetime, bool]
) -> int:
    """Set the implausible mark of storage-0 readings; the number of rows that changed."""
    if not marks:
        return 0
    ordered = sorted(marks.items())
    params = {"meter": meter_id, "at": [at for at, _ in ordered], "flag": [f for _, f in ordered]}
    return conn.cursor().execute(_SET_IMPLAUSIBLE, params).rowcount


def load_replacements(conn: psycopg.Connection[Any], meter_id: str) -> list[StoredReplacement]:
    out = []
    for row in conn.cursor().execute(_REPLACEMENTS, {"meter": meter_id}):
        ident, at, old_id, old_final, new_id, new_start, detected = row
        replacement = Replacement(utc(at), old_id, old_final, new_id, new_start, bool(detected))
        out.append(StoredReplacement(int(ident), replacement))
    return out


def record_restarts(conn: psycopg.Connection[Any], restarts: Iterable[Replacement]) -> int:
    rows = [(r.at, r.old_meter_id, r.old_final, r.new_meter_id, r.new_start) for r in restarts]
    if not rows:
        return 0
    cur = conn.cursor()
    cur.executemany(_INSERT_DETECTED, rows)
    return cur.rowcount


def forget_restarts(conn: psycopg.Connection[Any], ids: Sequence[int]) -> int:
    if not ids:
        return 0
    return conn.cursor().execute(_DELETE_DETECTED, (list(ids),)).rowcount


def load_monthly(
    conn: psycopg.Connection[Any], meter_id: str, periods: Sequence[date]
) -> dict[date, StoredMonthly]:
    out: dict[date, StoredMonthly] = {}
    cur = conn.cursor(row_factory=dict_row)
    for row in cur.execute(_MONTHLY, (meter_id, list(periods))):
        result = MonthlyResult.from_row(
            meter_id=meter_id,
            period=row["period"],
            boundary=utc(row["boundary"]),
            value=row["value"],
            unit=row["unit"],
            method=row["method"],
            evidence=row["evidence"],
        )
        out[row["period"]] = StoredMonthly(result, int(row["revision"]))
    return out


def insert_monthly(conn: psycopg.Connection[Any], result: MonthlyResult, now: datetime) -> None:
    conn.execute(
        _INSERT_MONTHLY,
        (result.meter_id, result.period, result.boundary, result.value, result.unit,
         result.method, Jsonb(result.evidence_json()), now),
    )  # fmt: skip


def revise_monthly(
    conn: psycopg.Connection[Any], result: MonthlyResult, revision: int, now: datetime
) -> None:
    """Write `result` as the revision after `revision` (the triggers keep the history)."""
    cur = conn.execute(
        _REVISE_MONTHLY,
        (result.boundary, result.value, result.unit, result.method,
         Jsonb(result.evidence_json()), now, result.meter_id, result.period, revision),
    )  # fmt: skip
    if cur.rowcount != 1:
        raise RuntimeError(f"monthly reading {result.meter_id} {result.period} changed meanwhile")


def load_open_alerts(conn: psycopg.Connection[Any], meter_id: str) -> list[OpenAlert]:
    rows = conn.cursor().execute(_OPEN_ALERTS, (meter_id,))
    return [OpenAlert(kind, rule, utc(opened_at)) for kind, rule, opened_at in rows]


def last_decisions(conn: psycopg.Connection[Any], meter_id: str) -> dict[str, datetime]:
    """The latest opened_at or closed_at of the meter's alerts, by rule."""
    rows = conn.cursor().execute(_LAST_DECISIONS, (meter_id,))
    return {str(rule): utc(at) for rule, at in rows}


def apply_alert_changes(
    conn: psycopg.Connection[Any], meter_id: str, changes: Sequence[AlertChange]
) -> tuple[int, int]:
    """Open and close alerts as the engines said, in order; (opened, closed)."""
    opened = closed = 0
    cur = conn.cursor()
    for change in changes:
        evidence = Jsonb(dict(change.evidence))
        if change.action == "open":
            cur.execute(_OPEN_ALERT, (meter_id, change.kind, change.rule, change.at, evidence))
            opened += cur.rowcount
        else:
            cur.execute(
                _CLOSE_ALERT, (change.at, evidence, meter_id, change.kind, change.rule, change.at)
            )
            closed += cur.rowcount
    return opened, closed


def load_status_reports(
    conn: psycopg.Connection[Any],
    meter_id: str,
    *,
    after: datetime,
    flags: Sequence[str],
    from_first_flag: bool,
) -> list[tuple[datetime, list[str], int | None]]:
    """The meter's status reports after `after`, in order; with `from_first_flag` only from the
    first one that carries one of `flags` (before it, with no flag alert open, nothing
    changes)."""
    cur = conn.cursor()
    start = after
    if from_first_flag:
        row = cur.execute(_FIRST_FLAGGED, (meter_id, after, list(flags))).fetchone()
        if row is None or row[0] is None:
            return []
        start = row[0]
    rows = cur.execute(_STATUS_REPORTS, (meter_id, start))
    return [
        (utc(at), list(names), None if raw is None else int(raw))
        for at, names, raw in rows
        if utc(at) > after
    ]


def load_rules(conn: psycopg.Connection[Any]) -> tuple[VerificationRule, ...]:
    rows = conn.cursor().execute(_RULES)
    return tuple(
        VerificationRule(country, medium, kind, int(years), source)
        for country, medium, kind, years, source in rows
    )


def set_due(conn: psycopg.Connection[Any], meter_id: str, due_on: date | None) -> int:
    return conn.cursor().execute(_SET_DUE, (due_on, meter_id, due_on)).rowcount
