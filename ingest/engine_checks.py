"""The per-meter steps of ingest.engine_run between loading and writing: screening the readings,
choosing each period's readings, and the alert rules (flow, meter flags, plausibility,
verification). Only `flag_alert_changes` reads the database (the status reports)."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from ingest import engine_sql as db
from ingest.alerts import AlertChange, OpenAlert
from ingest.flow import FlowThresholds, hourly_flows, night_lows, nights_covered
from ingest.leaks import (
    CONTINUOUS_FLOW,
    FLAG_ALERTS,
    FLAG_RULE,
    NIGHT_FLOW,
    continuous_flow_changes,
    flag_changes,
    night_flow_changes,
)
from ingest.monthly import needed_windows
from ingest.monthly_values import MonthlyRules
from ingest.plausibility import Limits, Verdict, detect_replacements, findings, implausible_alert
from ingest.series import MANUAL, Reading, Replacement
from ingest.verification import DEFAULT_COUNTING, Due, VerificationRule, find_rule, next_due

_US = timedelta(microseconds=1)
PLAUSIBILITY_RULE = "plausibility"  # ingest.plausibility.implausible_alert's rule
_RestartKey = tuple[datetime, Decimal, Decimal]


@dataclass(frozen=True, slots=True)
class Screened:
    """A meter's loaded readings after screening.

    `readings`: all of them (index and registers) in time order, each marked implausible as
    the engines must see it; `replacements`: registry events and detected restarts;
    `marks`: index readings whose stored mark changes; `newly_implausible`: the verdicts of
    readings marked now that were not before; `record`/`forget`: detected restarts to add, and
    the ids of recorded ones the readings no longer show.
    """

    readings: tuple[Reading, ...]
    replacements: tuple[Replacement, ...]
    marks: Mapping[datetime, bool]
    newly_implausible: tuple[Verdict, ...]
    record: tuple[Replacement, ...]
    forget: tuple[int, ...]


def screen(
    meter_id: str,
    stored: Sequence[db.StoredReading],
    stored_replacements: Sequence[db.StoredReplacement],
    limits: Limits,
    tail: datetime,
    *,
    whole: bool,
) -> Screened:
    """Judge the index readings from `tail` on (all of them when `whole`) afresh.

    Screening starts at the two last unmarked meter readings before `tail`: the later one is
    judged again (a new reading after it may show it was a spike), the earlier one is its
    reference. Readings before that keep their stored marks, and restarts recorded before it
    stand, so a run over the latest readings agrees with a run over all of them.
    """
    anchors = [
        index
        for index in range(bisect_left([s.reading.measured_at for s in stored], tail) - 1, -1, -1)
        if _usable_index(stored[index])
    ][:2]
    domain_start = min(anchors) if anchors and not whole else 0
    scope_start = None if whole else (stored[max(anchors)].reading.measured_at if anchors else tail)

    def in_scope(at: datetime) -> bool:
        return scope_start is None or at >= scope_start

    registry = [s.replacement for s in stored_replacements if not s.replacement.detected]
    detected = [s for s in stored_replacements if s.replacement.detected]
    kept = [s.replacement for s in detected if not in_scope(s.replacement.at)]
    domain_at = stored[domain_start].reading.measured_at if stored else tail
    domain = [
        replace(s.reading, implausible=True)
        if s.marked and not in_scope(s.reading.measured_at)
        else s.reading
        for s in stored
        if s.reading.storage == 0 and s.reading.measured_at >= domain_at
    ]
    references = [r for r in (*registry, *kept) if not r.removes(meter_id)]
    verdicts = findings(domain, limits, references)
    bad = {id(v.reading): v for v in verdicts if not v.usable}
    restarts = [r for r in detect_replacements(meter_id, verdicts) if in_scope(r.at)]

    readings: list[Reading] = []
    marks: dict[datetime, bool] = {}
    newly: list[Verdict] = []
    for item in stored:
        reading = item.reading
        at = reading.measured_at
        if reading.storage != 0 or at < domain_at or not in_scope(at):
            readings.append(replace(reading, implausible=True) if item.marked else reading)
            continue
        verdict = bad.get(id(reading))  # an in-scope reading went into `domain` as it is
        flag = verdict is not None
        if flag != item.marked:
            marks[at] = flag
            if verdict is not None:
                newly.append(verdict)
        readings.append(replace(reading, implausible=True) if flag else reading)

    in_scope_detected = [s for s in detected if in_scope(s.replacement.at)]
    found = {_restart_key(r) for r in restarts}
    have = {_restart_key(s.replacement) for s in in_scope_detected}
    return Screened(
        readings=tuple(readings),
        replacements=(*registry, *kept, *restarts),
        marks=marks,
        newly_implausible=tuple(newly),
        record=tuple(r for r in restarts if _restart_key(r) not in have),
        forget=tuple(s.id for s in in_scope_detected if _restart_key(s.replacement) not in found),
    )


def _usable_index(item: db.StoredReading) -> bool:
    reading = item.reading
    return reading.storage == 0 and reading.source != MANUAL and not item.marked


def _restart_key(replacement: Replacement) -> _RestartKey:
    return replacement.at, replacement.old_final, replacement.new_start


def period_inputs(
    readings: Sequence[Reading],
    times: Sequence[datetime],
    period: date,
    zone: ZoneInfo,
    rules: MonthlyRules,
) -> list[Reading]:
    """The readings compute_monthly gets for `period`: those in its needed windows, and the
    last usable meter reading before them (the anchor of an estimate for a meter silent for
    longer than the history window). The same in every mode of a run."""
    windows = needed_windows(period, zone, rules)
    chosen: set[int] = set()
    for lo, hi in windows:
        chosen.update(range(bisect_left(times, lo), bisect_right(times, hi)))
    for index in range(bisect_left(times, windows[-1][0]) - 1, -1, -1):
        reading = readings[index]
        if reading.storage == 0 and reading.source != MANUAL and not reading.implausible:
            chosen.add(index)
            break
    return [readings[index] for index in sorted(chosen)]


def flow_changes(
    readings: Sequence[Reading],
    open_alerts: Sequence[OpenAlert],
    decided: Mapping[str, datetime],
    thresholds: FlowThresholds,
    zone: ZoneInfo,
) -> list[AlertChange]:
    """Night-flow and continuous-flow alerts from index readings in time order."""
    series = [r for r in readings if r.source != MANUAL]
    flows = hourly_flows(series, thresholds)
    lows = night_lows(flows, nights_covered(series, thresholds, zone), thresholds, zone)
    changes = night_flow_changes(lows, open_alerts, thresholds, since=decided.get(NIGHT_FLOW))
    return changes + continuous_flow_changes(
        flows, open_alerts, thresholds, since=decided.get(CONTINUOUS_FLOW)
    )


def implausible_changes(
    newly: Sequence[Verdict], open_alerts: Sequence[OpenAlert]
) -> list[AlertChange]:
    """An `implausible_reading` alert for the first reading marked now, unless one is open:
    a person looks at the meter's readings once, not once per bad reading."""
    if not newly or any(a.rule == PLAUSIBILITY_RULE for a in open_alerts):
        return []
    first = min(newly, key=lambda verdict: verdict.reading.measured_at)
    change = implausible_alert(first)
    assert change is not None  # newly holds implausible verdicts only
    return [replace(change, evidence={**change.evidence, "readings_marked": len(newly)})]


def flag_alert_changes(
    conn: psycopg.Connection[Any],
    meter_id: str,
    open_alerts: Sequence[OpenAlert],
    decided: Mapping[str, datetime],
    since: datetime | None,
) -> list[AlertChange]:
    """Meter-flag alerts from the status reports not yet decided on. With `since` (the
    earliest change the caller knows of) older reports were seen by an earlier run."""
    last = max((at for rule, at in decided.items() if rule.startswith(FLAG_RULE)), default=None)
    after = last or db.EARLIEST
    if since is not None:
        after = max(after, since - _US)
    reports = db.load_status_reports(
        conn,
        meter_id,
        after=after,
        flags=sorted(FLAG_ALERTS),
        from_first_flag=not any(a.rule.startswith(FLAG_RULE) for a in open_alerts),
    )
    current = list(open_alerts)
    changes: list[AlertChange] = []
    for at, flags, raw in reports:
        step = flag_changes(flags, at, current, last_status_at=last, status_raw=raw)
        for change in step:
            if change.action == "open":
                current.append(OpenAlert(change.kind, change.rule, change.at))
            else:
                current = [a for a in current if (a.kind, a.rule) != (change.kind, change.rule)]
        changes += step
    return changes


def verification_due(meter: db.MeterInfo, rules: Sequence[VerificationRule]) -> Due | None:
    """The meter's next verification due date from the rules table and the registry.

    `meters.verified_on` holds the last verification date, or the 1st of January of the
    marking year when only the year is known (api.meter_import); a stored due date that is the
    marking-year count of such a date is kept, since the registry knew which it was. A meter
    whose date cannot be derived (no rule, no date) keeps a stored due date as it is.
    """
    rule = None
    if meter.country is not None and meter.medium is not None:
        rule = find_rule(meter.country, meter.medium, meter.kind, rules)
    years = meter.interval_years
    if years is not None and (rule is None or rule.years != years):
        rule = VerificationRule(
            meter.country or "", meter.medium or "", meter.kind or "*", years,
            "meters.verification_interval_years",
        )  # fmt: skip
    verified, stored = meter.verified_on, meter.next_due
    if rule is not None and verified is not None:
        if stored is not None and (verified.month, verified.day) == (1, 1):
            marking = next_due(rule, marking_year=verified.year)
            if marking.due_on == stored:
                return marking
        return next_due(rule, last_verified=verified)
    if stored is None:
        return None
    rule = rule or VerificationRule(
        meter.country or "", meter.medium or "", meter.kind or "*", years or 0,
        "meters.next_verification_due",
    )  # fmt: skip
    return Due(stored, rule, "last_verification", DEFAULT_COUNTING)
