"""The billing determinant of a month (DESIGN.md section 5): the index at the boundary.

`compute_monthly` takes one meter's readings and replacements, the period, the clock and the
zone, and returns the best value it can justify, trying the methods in their order of trust:

1. `register`: a month-end register of the meter (storage >= 1). A meter's register carries a
   date, not an instant; gateways place it at that date's midnight (UTC or local) or at the
   boundary itself, and meters label it with the last day of the month or the first day of the
   next. So a register counts when the calendar date of its `measured_at`, read in UTC or in the
   utility's zone, is the last day of the month or the boundary date (e.g. 2026-10-31 or
   2026-11-01 for October). Registers that disagree with each other are not trusted.
2. `actual`: the meter reading nearest the boundary within `actual_tolerance` (earlier on a tie).
3. `interpolated`: linear in real time between the last reading before and the first after
   the boundary, at most `max_gap` apart, the index not going backwards.
4. `customer`: the manual reading nearest the boundary within `customer_window`, moved to the
   boundary by the average consumption (ingest.rates) and kept between the meter readings
   around the boundary.
5. `estimated`: the last trusted reading before the boundary (a meter reading, or a plausible
   customer reading when that is newer), moved forward by the average consumption and kept
   below the first reading after the boundary; when there is none before, the first reading
   after, moved back.

Methods 4 and 5 wait until `settle` has passed after the boundary: a reading may still come.
A meter not on the premise at the boundary (installed later, removed earlier) has no value.
Derived values are rounded half to even to the meter's resolution (MonthlyRules).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from ingest.boundaries import (
    DEFAULT_ZONE,
    month_boundary,
    next_period,
    period_start,
    previous_period,
    require_utc,
    shift_periods,
)
from ingest.monthly_values import Evidence, Method, MonthlyResult, MonthlyRules, RatePiece
from ingest.rates import RateModel
from ingest.segments import History, Segment, build_history, interpolate
from ingest.series import Reading, Replacement, quantum_of

DEFAULT_RULES = MonthlyRules()


def compute_monthly(
    meter_id: str,
    period: date,
    readings: Sequence[Reading],
    *,
    now: datetime,
    zone: ZoneInfo = DEFAULT_ZONE,
    rules: MonthlyRules = DEFAULT_RULES,
    replacements: Sequence[Replacement] = (),
    unit: str = "m3",
) -> MonthlyResult | None:
    """The monthly result of `meter_id` for `period`, or None when there is none yet.

    `readings` are the meter's volume readings (storage 0 and registers, meter and manual ones,
    any order; `needed_windows` says which instants matter); `replacements` the registry events
    that concern it (detected restarts are found here). None means: the boundary is still ahead,
    the meter was not on the premise at it, or nothing justifies a value yet.
    """
    boundary = month_boundary(period, zone)
    if require_utc(now, "now") < boundary:
        return None
    history = build_history(meter_id, readings, replacements, rules.limits)
    return _compute(
        history, period_start(period), boundary, now=now, zone=zone, rules=rules, unit=unit
    )


def needed_windows(
    period: date, zone: ZoneInfo = DEFAULT_ZONE, rules: MonthlyRules = DEFAULT_RULES
) -> list[tuple[datetime, datetime]]:
    """The UTC intervals whose readings `compute_monthly` uses for `period`.

    Around the boundary: the history window before it (for the 90-day rate and an estimate's
    anchor) up to the reach of the interpolation and customer rules after it; around the two
    boundaries of the same month a year earlier (for that month's rate). Readings outside are
    harmless; a meter silent for longer than the history window needs its latest reading before
    the first interval added to get an estimate.
    """
    boundary = month_boundary(period, zone)
    reach = max(rules.max_gap, rules.customer_window, rules.actual_tolerance, timedelta(days=2))
    last_year = shift_periods(period_start(period), -12)
    opening = month_boundary(previous_period(last_year), zone)
    closing = month_boundary(last_year, zone)
    return [
        (opening - rules.max_gap, opening + rules.max_gap),
        (closing - rules.max_gap, closing + rules.max_gap),
        (boundary - rules.history - rules.max_gap, boundary + reach),
    ]


def _compute(
    history: History,
    period: date,
    boundary: datetime,
    *,
    now: datetime,
    zone: ZoneInfo,
    rules: MonthlyRules,
    unit: str,
) -> MonthlyResult | None:
    if not history.active_at(boundary):
        return None

    def result(
        method: Method,
        value: Decimal,
        evidence: Sequence[Evidence],
        rates: tuple[RatePiece, ...] = (),
    ) -> MonthlyResult:
        return MonthlyResult(
            history.meter_id, period, boundary, value, unit, method, tuple(evidence), rates
        )

    register = _register(history.registers, period, zone)
    if register is not None:
        return result("register", register.value, [_evidence("register", register)])
    segment = history.segment_at(boundary)
    near = segment.nearest(boundary, rules.actual_tolerance)
    if near is not None:
        return result("actual", near.value, [_evidence("reading", near)])
    pair = segment.bracket(boundary, rules.max_gap)
    if pair is not None:
        before, after = pair
        value = _round(interpolate(before, after, boundary), rules, before.value, after.value)
        return result(
            "interpolated", value, [_evidence("before", before), _evidence("after", after)]
        )
    if now < boundary + rules.settle:
        return None
    lower, upper = segment.last_before(boundary), segment.first_after(boundary)
    bounds = [_evidence("bound", r) for r in (lower, upper) if r is not None]
    customer = _customer(segment, boundary, rules.customer_window)
    if customer is not None:
        rates = RateModel(history, segment, customer.measured_at, zone, rules)
        moved, pieces = _move(rates, customer, boundary)
        value = _round(_clamp(moved, lower, upper), rules, customer.value, *_values(bounds))
        return result("customer", value, [_evidence("customer", customer), *bounds], pieces)
    anchor = _anchor(segment, boundary)
    if anchor is None:
        return None
    rates = RateModel(history, segment, anchor.measured_at, zone, rules)
    moved, pieces = _move(rates, anchor, boundary)
    evidence = [_evidence("anchor", anchor)]
    if anchor.measured_at < boundary:
        if upper is not None:
            evidence.append(_evidence("bound", upper))
        value = _round(_clamp(moved, None, upper), rules, *_values(evidence))
    else:
        value = _round(max(moved, Fraction(0)), rules, anchor.value)
    return result("estimated", value, evidence, pieces)


def _register(registers: Sequence[Reading], period: date, zone: ZoneInfo) -> Reading | None:
    closing_day = next_period(period)
    dates = {closing_day, closing_day - timedelta(days=1)}
    matching = [
        r
        for r in registers
        if r.measured_at.astimezone(UTC).date() in dates
        or r.measured_at.astimezone(zone).date() in dates
    ]
    if not matching or len({r.value for r in matching}) != 1:
        return None
    return min(matching, key=lambda r: (r.measured_at, r.storage))


def _customer(segment: Segment, boundary: datetime, window: timedelta) -> Reading | None:
    best: Reading | None = None
    for reading in segment.manual:
        distance = abs(reading.measured_at - boundary)
        if distance <= window and (best is None or distance < abs(best.measured_at - boundary)):
            best = reading
    return best


def _anchor(segment: Segment, boundary: datetime) -> Reading | None:
    meter = segment.last_before(boundary)
    manual = [r for r in segment.manual if r.measured_at < boundary]
    latest = manual[-1] if manual else None
    if latest is not None and (meter is None or latest.measured_at > meter.measured_at):
        return latest
    return meter if meter is not None else segment.first_after(boundary)


def _move(
    rates: RateModel, reading: Reading, boundary: datetime
) -> tuple[Fraction, tuple[RatePiece, ...]]:
    if reading.measured_at <= boundary:
        volume, pieces = rates.volume(reading.measured_at, boundary)
        return Fraction(reading.value) + volume, pieces
    volume, pieces = rates.volume(boundary, reading.measured_at)
    return Fraction(reading.value) - volume, pieces


def _clamp(value: Fraction, lower: Reading | None, upper: Reading | None) -> Fraction:
    if lower is not None:
        value = max(value, Fraction(lower.value))
    if upper is not None:
        value = min(value, Fraction(upper.value))
    return value


def _round(value: Fraction, rules: MonthlyRules, *neighbours: Decimal) -> Decimal:
    exponent = quantum_of(rules.resolution, *neighbours)
    steps = round(value * Fraction(10) ** -exponent)  # round() on a Fraction: half to even
    return Decimal(steps).scaleb(exponent)


def _values(evidence: Sequence[Evidence]) -> list[Decimal]:
    return [e.value for e in evidence]


def _evidence(role: str, reading: Reading) -> Evidence:
    return Evidence(
        role, reading.measured_at, reading.value, reading.storage, reading.source, reading.ref
    )
