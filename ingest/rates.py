"""Average consumption for moving a reading in time (DESIGN.md section 5, methods 4 and 5).

A span of time is cut at the local month boundaries; each piece gets the average rate of the
same month a year earlier (the meter's index at that month's two boundaries, each a reading
within the actual tolerance or interpolated within the gap limit, on one run of the index), or
else the rate of the meter's readings over the 90 days before the reference reading (after it,
when there is nothing before). A piece's rate depends only on its month and the reference, so two
months estimated from the same anchor agree on the part they share: the later month's value is
never below the earlier one's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from ingest.boundaries import month_boundary, period_of, previous_period, shift_periods
from ingest.monthly_values import MonthlyRules, RateBasis, RatePiece
from ingest.segments import MICROSECOND, History, Segment

_DAY_US = 86_400_000_000
_MIN_SPAN = timedelta(days=1)  # a shorter stretch of readings says little about a daily average
_DISPLAY = Decimal("0.000001")


class RateModel:
    """Rates for one meter, referenced to one reading (`reference`, in `segment`)."""

    def __init__(
        self,
        history: History,
        segment: Segment,
        reference: datetime,
        zone: ZoneInfo,
        rules: MonthlyRules,
    ) -> None:
        self.history = history
        self.zone = zone
        self.rules = rules
        self.recent = _recent_rate(segment, reference, rules.history)
        self._last_year: dict[datetime, Fraction | None] = {}

    def volume(self, first: datetime, last: datetime) -> tuple[Fraction, tuple[RatePiece, ...]]:
        """The volume the rates give between `first` and `last` (first <= last)."""
        total = Fraction(0)
        pieces: list[RatePiece] = []
        start = first
        while start < last:
            boundary = month_boundary(period_of(start, self.zone), self.zone)
            end = min(boundary, last)
            rate, basis = self._rate(boundary)
            total += rate * ((end - start) // MICROSECOND)
            per_day = Decimal(rate.numerator * _DAY_US) / Decimal(rate.denominator)
            pieces.append(RatePiece(start, end, per_day.quantize(_DISPLAY), basis))
            start = end
        return total, tuple(pieces)

    def _rate(self, boundary: datetime) -> tuple[Fraction, RateBasis]:
        if boundary not in self._last_year:
            self._last_year[boundary] = self._same_period_last_year(boundary)
        rate = self._last_year[boundary]
        if rate is not None:
            return rate, "same_period_last_year"
        if self.recent is not None:
            return self.recent, "last_90_days"
        return Fraction(0), "none"

    def _same_period_last_year(self, boundary: datetime) -> Fraction | None:
        period = shift_periods(period_of(boundary - MICROSECOND, self.zone), -12)
        start = month_boundary(previous_period(period), self.zone)
        end = month_boundary(period, self.zone)
        history, rules = self.history, self.rules
        if history.segment_index(start) != history.segment_index(end):
            return None  # the meter was replaced in between: its index does not span the month
        segment = history.segment_at(end)
        opening = segment.index_at(start, rules.actual_tolerance, rules.max_gap)
        closing = segment.index_at(end, rules.actual_tolerance, rules.max_gap)
        if opening is None or closing is None or closing[0] < opening[0]:
            return None
        return (closing[0] - opening[0]) / ((end - start) // MICROSECOND)


def _recent_rate(segment: Segment, reference: datetime, window: timedelta) -> Fraction | None:
    points = segment.points
    before = [p for p in points if reference - window <= p.measured_at <= reference]
    after = [p for p in points if reference <= p.measured_at <= reference + window]
    for chosen in (before, after):
        if len(chosen) >= 2 and chosen[-1].measured_at - chosen[0].measured_at >= _MIN_SPAN:
            rise = Fraction(chosen[-1].value) - Fraction(chosen[0].value)
            return rise / ((chosen[-1].measured_at - chosen[0].measured_at) // MICROSECOND)
    return None
