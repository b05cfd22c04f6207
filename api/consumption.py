"""Consumption per hour, day or month in the utility's local time, from a meter's volume index.

Buckets are cut at local wall-clock edges computed with zoneinfo, so a local day lasts 23 or
25 hours on the DST days and an hour is a real hour (the autumn night has two 03:00 hours in
Riga, with different UTC offsets; the spring night has none). The consumption of a bucket is
the index at its end minus the index at its start; the index at an edge is a reading taken at
that instant, else the straight line between the readings either side of it (ingest.segments,
in real time), when they are at most `max_gap` apart and the index did not go backwards
between them. Edge values are rounded to the readings' resolution before they are subtracted,
so the buckets of a range add up to the range's consumption.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Literal
from zoneinfo import ZoneInfo

from ingest.boundaries import local_midnight, next_period, period_start
from ingest.monthly_values import MonthlyRules
from ingest.segments import interpolate
from ingest.series import Reading

BucketSize = Literal["hour", "day", "month"]
MAX_BUCKETS = 10_000
MAX_GAP = MonthlyRules().max_gap  # the gap the monthly engine still interpolates across
_HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime  # local, with its UTC offset
    end: datetime
    consumption: Decimal | None


def aligned_range(first: date, last: date, size: BucketSize) -> tuple[date, date]:
    """[first, last) widened to whole buckets: months start on the 1st."""
    if size != "month":
        return first, last
    end = period_start(last)
    if end != last:
        end = next_period(end)
    return period_start(first), end


def bucket_edges(first: date, last: date, size: BucketSize, zone: ZoneInfo) -> list[datetime]:
    """The UTC instants that cut local [first, last) into buckets, both ends included.

    Hours step in real time from local midnight, which keeps them on local hour marks in every
    zone whose offsets differ by whole hours (all of Europe)."""
    if last <= first:
        raise ValueError("the range is empty: 'to' must be after 'from'")
    if size == "hour":
        start, end = local_midnight(first, zone), local_midnight(last, zone)
        count = (end - start) // _HOUR
        _check_count(count)
        return [start + k * _HOUR for k in range(count + 1)]
    days: list[date] = []
    day = first
    while day <= last:
        days.append(day)
        if len(days) > MAX_BUCKETS + 1:
            _check_count(len(days))
        day = day + timedelta(days=1) if size == "day" else next_period(day)
    return [local_midnight(d, zone) for d in days]


def _check_count(count: int) -> None:
    if count > MAX_BUCKETS:
        raise ValueError(f"at most {MAX_BUCKETS} buckets per request; ask for a shorter range")


def index_at(edge: datetime, before: Reading | None, after: Reading | None) -> Fraction | None:
    """The index at `edge` from the last reading at or before it and the first at or after it."""
    if before is not None and before.measured_at == edge:
        return Fraction(before.value)
    if after is not None and after.measured_at == edge:
        return Fraction(after.value)
    if before is None or after is None or after.value < before.value:
        return None
    if after.measured_at - before.measured_at > MAX_GAP:
        return None
    return interpolate(before, after, edge)


def round_to(value: Fraction, exponent: int) -> Decimal:
    """`value` rounded half to even to 10**exponent, as the monthly engine rounds."""
    steps = round(value * Fraction(10) ** -exponent)
    return Decimal(steps).scaleb(exponent)


def buckets(
    edges: Sequence[datetime],
    indices: Sequence[Fraction | None],
    exponent: int,
    zone: ZoneInfo,
) -> list[Bucket]:
    """Consumption between consecutive edges; None where either edge's index is unknown or the
    index fell (a meter replaced inside the bucket)."""
    rounded = [None if value is None else round_to(value, exponent) for value in indices]
    out: list[Bucket] = []
    for k in range(len(edges) - 1):
        start, end = rounded[k], rounded[k + 1]
        used = None if start is None or end is None or end < start else end - start
        out.append(Bucket(edges[k].astimezone(zone), edges[k + 1].astimezone(zone), used))
    return out
