"""Running the engines against the database (DESIGN.md sections 5-7).

`run_engines` takes meters one at a time, each in a transaction of its own under a per-meter
advisory lock: it loads the meter's readings, replacements, status reports and open alerts,
calls the pure engines (ingest.monthly, ingest.plausibility, ingest.flow/leaks,
ingest.verification) and writes what they decide. Everything it writes is idempotent, so
running it twice changes nothing:

- monthly_readings: a row per closed period; a stored row is revised only when
  ingest.monthly_values.supersedes says so (the triggers keep the history);
- readings.implausible: the plausibility verdict of every storage-0 reading it screened, and an
  `implausible_reading` alert for readings newly marked (one open at a time);
- meter_replacements: index restarts found in the readings, as `detected` rows, so billing
  links the two runs of the index;
- alerts: meter flags, night flow, continuous flow, verification due and overdue;
- meters.next_verification_due.

Modes. Without `changed_since` a meter is done whole: every closed period from its first
reading (or installation) on, every reading screened and scanned. With `changed_since[m]` (the
earliest instant whose data changed, as the worker knows it) only the periods whose readings
that can change are recomputed, and readings are screened and scanned from a margin before it;
older marks stand as an earlier run left them. Either way each period gets the same readings
(`needed_windows` of ingest.monthly, plus the last usable reading before them), so both modes
agree on every value and never revise each other's rows.

Only registered meters (status other than `unregistered`) are run: a receiver also hears the
neighbours' meters, which are neither billed nor watched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from ingest import engine_sql as db
from ingest.alerts import AlertChange, OpenAlert
from ingest.boundaries import (
    DEFAULT_ZONE,
    last_closed_period,
    month_boundary,
    next_period,
    period_of,
    period_start,
    previous_period,
    require_utc,
)
from ingest.engine_checks import (
    Screened,
    flag_alert_changes,
    flow_changes,
    implausible_changes,
    period_inputs,
    screen,
    verification_due,
)
from ingest.flow import FlowThresholds, thresholds_for
from ingest.monthly import compute_monthly, needed_windows
from ingest.monthly_values import Evidence, MonthlyRules, supersedes
from ingest.plausibility import Limits, q4_from_q3
from ingest.verification import VerificationRule, verification_changes

log = logging.getLogger(__name__)

_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class EngineReport:
    """What a run did. `monthly_kept`: computed, and the stored row stands; `pending`: no value
    can be justified yet; `marks`: implausible marks set or cleared; `restarts`: detected
    restarts recorded or withdrawn; `failed`: meters whose transaction was rolled back."""

    meters: int = 0
    skipped: int = 0
    monthly_new: int = 0
    monthly_revised: int = 0
    monthly_kept: int = 0
    monthly_pending: int = 0
    alerts_opened: int = 0
    alerts_closed: int = 0
    marks: int = 0
    restarts: int = 0
    due_dates: int = 0
    failed: tuple[str, ...] = ()

    def __add__(self, other: EngineReport) -> EngineReport:
        return EngineReport(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(EngineReport))
        )

    def summary(self) -> str:
        return (
            f"{self.meters} meters ({self.skipped} unregistered skipped, {len(self.failed)}"
            f" failed); monthly readings: {self.monthly_new} new, {self.monthly_revised} revised,"
            f" {self.monthly_kept} unchanged, {self.monthly_pending} pending; alerts:"
            f" {self.alerts_opened} opened, {self.alerts_closed} closed; {self.marks} readings"
            f" re-marked, {self.restarts} restarts recorded or withdrawn, {self.due_dates}"
            " verification due dates set"
        )


@dataclass(frozen=True, slots=True)
class _Run:
    now: datetime
    zone: ZoneInfo
    periods: tuple[date, ...] | None
    rules: tuple[VerificationRule, ...]  # read once per run


def run_engines(
    conn: psycopg.Connection[Any],
    *,
    meter_ids: Iterable[str] | None = None,
    periods: Iterable[date] | None = None,
    now: datetime,
    zone: ZoneInfo = DEFAULT_ZONE,
    changed_since: Mapping[str, datetime] | None = None,
) -> EngineReport:
    """Run the engines for `meter_ids` (None: the keys of `changed_since`, else every
    registered meter) and write their results, one transaction per meter.

    `periods` (any day of each month) limits the monthly engine to those closed periods; None
    means every closed period (or, for a meter in `changed_since`, those its changes reach).
    `now` is the engines' clock. `conn` should have no transaction open (autocommit or idle):
    inside the caller's transaction each meter becomes a savepoint instead. A meter that fails
    is logged, rolled back and listed in `failed`; a lost connection is raised.
    """
    now = require_utc(now, "now")
    since = {m: require_utc(t, "changed_since") for m, t in (changed_since or {}).items()}
    with conn.transaction():
        if meter_ids is not None:
            ids = sorted(set(meter_ids))
        elif changed_since is not None:
            ids = sorted(since)
        else:
            ids = db.registered_meters(conn)
        rules = db.load_rules(conn)
    chosen = None if periods is None else tuple(sorted({period_start(p) for p in periods}))
    run = _Run(now, zone, chosen, rules)
    report = EngineReport()
    for meter_id in ids:
        try:
            with conn.transaction():
                report += _run_meter(conn, meter_id, run, since.get(meter_id))
        except Exception:
            if conn.broken or conn.closed:
                raise
            # One meter's bad data (or a bug it triggers) must not hold up the others.
            log.exception("the engines failed for meter %s", meter_id)
            report += EngineReport(meters=1, failed=(meter_id,))
    return report


def sweep(
    conn: psycopg.Connection[Any], *, now: datetime, zone: ZoneInfo = DEFAULT_ZONE
) -> EngineReport:
    """What the clock alone changes: the last closed period of meters that have no reading for
    it once the settling time has passed (a silent meter gets its estimate), and the
    verification alerts and due dates of every registered meter."""
    now = require_utc(now, "now")
    period = last_closed_period(now, zone)
    report = EngineReport()
    if now >= month_boundary(period, zone) + MonthlyRules().settle:
        with conn.transaction():
            missing = db.meters_missing_period(conn, period, next_period(period))
        report += run_engines(
            conn, periods=[period], now=now, zone=zone, changed_since=dict.fromkeys(missing, now)
        )
    with conn.transaction():
        ids = db.registered_meters(conn)
        rules = db.load_rules(conn)
    run = _Run(now, zone, (), rules)
    for meter_id in ids:
        with conn.transaction():
            db.lock_meter(conn, meter_id)
            meter = db.load_meter(conn, meter_id)
            if meter is not None:
                report += _verify(conn, meter, db.load_open_alerts(conn, meter_id), run)
    return report


def _run_meter(
    conn: psycopg.Connection[Any], meter_id: str, run: _Run, since: datetime | None
) -> EngineReport:
    db.lock_meter(conn, meter_id)
    meter = db.load_meter(conn, meter_id)
    if meter is None or meter.status == "unregistered":
        return EngineReport(meters=1, skipped=1)
    limits = Limits(max_flow=None if meter.q3_m3h is None else q4_from_q3(meter.q3_m3h))
    rules = MonthlyRules(limits=limits)
    thresholds = thresholds_for(meter.meter_class)
    open_alerts = db.load_open_alerts(conn, meter_id)
    decided = db.last_decisions(conn, meter_id)
    report = EngineReport(meters=1)
    changes: list[AlertChange] = []
    first = db.first_reading_at(conn, meter_id)
    if first is not None:
        scan_from = None if since is None else since - _margin(thresholds)
        periods = _periods(meter, first, run, since, rules)
        windows = _windows(periods, scan_from, run.zone, rules)
        tail = windows[-1][0]
        stored = db.load_readings(
            conn, meter_id, windows, anchor_before=tail if tail > db.EARLIEST else None
        )
        screened = screen(
            meter_id, stored, db.load_replacements(conn, meter_id), limits, tail,
            whole=scan_from is None,
        )  # fmt: skip
        report += _write_screening(conn, meter_id, screened)
        report += _monthly(conn, meter_id, periods, screened, run=run, rules=rules)
        flow_readings = [
            r for r in screened.readings
            if r.storage == 0 and (scan_from is None or r.measured_at >= scan_from)
        ]  # fmt: skip
        changes += flow_changes(flow_readings, open_alerts, decided, thresholds, run.zone)
        changes += implausible_changes(screened.newly_implausible, open_alerts)
    changes += flag_alert_changes(conn, meter_id, open_alerts, decided, since)
    opened, closed = db.apply_alert_changes(conn, meter_id, changes)
    report += EngineReport(alerts_opened=opened, alerts_closed=closed)
    # Verification has a rule of its own: the changes above do not touch its alerts.
    return report + _verify(conn, meter, open_alerts, run)


def _margin(thresholds: FlowThresholds) -> timedelta:
    """How far before a change the flow rules must look to count their runs again."""
    nights = timedelta(days=thresholds.nights + 1)
    hours = timedelta(hours=thresholds.continuous_hours) + 2 * thresholds.hour_max
    return max(nights, hours) + thresholds.edge_slack


def _periods(
    meter: db.MeterInfo, first: datetime, run: _Run, since: datetime | None, rules: MonthlyRules
) -> list[date]:
    """The closed periods to compute: from the installation month (else the month before the
    first reading, whose boundary opens the first month with data) to the last one closed, and
    not past a removal."""
    zone = run.zone
    start = (
        period_start(meter.installed_on)
        if meter.installed_on is not None
        else previous_period(period_of(first, zone))
    )
    last = last_closed_period(run.now, zone)
    if meter.removed_on is not None:
        last = min(last, previous_period(period_start(meter.removed_on)))
    if run.periods is not None:
        return [p for p in run.periods if start <= p <= last]
    earliest = None
    if since is not None:
        # A reading is evidence for the boundaries within the rules' reach after it
        # (needed_windows); last year's windows lie before their own period's boundary, so
        # the periods they serve are reached too.
        reach = max(rules.max_gap, rules.customer_window, rules.actual_tolerance, timedelta(days=2))
        earliest = since - reach
        start = max(start, previous_period(period_of(earliest, zone)))
    out: list[date] = []
    period = start
    while period <= last:
        if earliest is None or month_boundary(period, zone) >= earliest:
            out.append(period)
        period = next_period(period)
    return out


def _windows(
    periods: Sequence[date], scan_from: datetime | None, zone: ZoneInfo, rules: MonthlyRules
) -> list[tuple[datetime, datetime]]:
    """Disjoint half-open UTC intervals of readings to load, in order. The last one runs to the
    end of time and holds the screened and scanned readings and every period's main window."""
    if scan_from is None:
        return [(db.EARLIEST, db.LATEST)]
    tail = scan_from
    spans: list[tuple[datetime, datetime]] = []
    for period in periods:
        *last_year, main = needed_windows(period, zone, rules)
        tail = min(tail, main[0])
        spans.extend((lo, hi + _US) for lo, hi in last_year)
    spans.append((tail, db.LATEST))
    spans.sort()
    merged: list[tuple[datetime, datetime]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _write_screening(
    conn: psycopg.Connection[Any], meter_id: str, screened: Screened
) -> EngineReport:
    marks = db.set_implausible(conn, meter_id, screened.marks)
    restarts = db.forget_restarts(conn, screened.forget)
    restarts += db.record_restarts(conn, screened.record)
    return EngineReport(marks=marks, restarts=restarts)


def _monthly(
    conn: psycopg.Connection[Any],
    meter_id: str,
    periods: Sequence[date],
    screened: Screened,
    *,
    run: _Run,
    rules: MonthlyRules,
) -> EngineReport:
    if not periods:
        return EngineReport()
    stored = db.load_monthly(conn, meter_id, periods)
    readings = screened.readings
    times = [r.measured_at for r in readings]
    marked = {(r.measured_at, r.storage) for r in readings if r.implausible}
    new = revised = kept = pending = 0
    for period in periods:
        result = compute_monthly(
            meter_id,
            period,
            period_inputs(readings, times, period, run.zone, rules),
            now=run.now,
            zone=run.zone,
            rules=rules,
            replacements=screened.replacements,
        )
        old = stored.get(period)
        if result is None:
            pending += old is None
            kept += old is not None
        elif old is None:
            db.insert_monthly(conn, result, run.now)
            new += 1
        elif supersedes(old.result, result) or (
            _rests_on(old.result.evidence, marked) and result != old.result
        ):
            db.revise_monthly(conn, result, old.revision, run.now)
            revised += 1
        else:
            kept += 1
    return EngineReport(
        monthly_new=new, monthly_revised=revised, monthly_kept=kept, monthly_pending=pending
    )


def _rests_on(evidence: Sequence[Evidence], marked: set[tuple[datetime, int]]) -> bool:
    """Whether a stored result was derived from a reading since found implausible: then it
    no longer stands, and whatever the engine now finds replaces it (supersedes compares two
    results that are both sound)."""
    return any((item.measured_at, item.storage) in marked for item in evidence)


def _verify(
    conn: psycopg.Connection[Any], meter: db.MeterInfo, open_alerts: Sequence[OpenAlert], run: _Run
) -> EngineReport:
    """The due date and the verification alerts; a meter not on its premise has none open."""
    due = verification_due(meter, run.rules)
    updated = 0
    if due is not None and due.due_on != meter.next_due:
        updated = db.set_due(conn, meter.meter_id, due.due_on)
    watched = due if meter.status == "active" else None
    changes = verification_changes(watched, run.now, open_alerts, zone=run.zone)
    opened, closed = db.apply_alert_changes(conn, meter.meter_id, changes)
    return EngineReport(alerts_opened=opened, alerts_closed=closed, due_dates=updated)
