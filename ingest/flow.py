"""Hourly flows derived from a meter's volume index, and the lowest one of each night.

Most meters report an index, not a flow, so an hourly flow is the index difference between two
readings about an hour apart, divided by the real time between them. "Frequent enough"
(DESIGN.md section 6) means: a reading, and a later one between `hour_min` and `hour_max` after
it (55 to 75 minutes by default). Readings every hour or more often qualify, and each reading
starts one such hour (with readings every 15 minutes the hours slide by 15 minutes); readings
every two hours give no hourly flow at all, because a two-hour average hides a quiet hour and
would raise the night minimum. Much shorter spans are not used either: with a 1-litre display
step, a 2 l/h leak shows as 0 or 1 litre in 15 minutes.

A night is named by its local morning; its window is wall-clock time in the utility's zone, so
the night of the spring DST change is an hour shorter and the autumn one an hour longer
(ingest.boundaries.night_window). An hour counts for a night when it lies within the window,
give or take `edge_slack` (readings come a few seconds or minutes off the hour).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from ingest.boundaries import DEFAULT_ZONE, night_window
from ingest.series import MANUAL, Reading

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_US_PER_HOUR = 3_600_000_000
_DISPLAY = Decimal("0.001")


@dataclass(frozen=True, slots=True)
class FlowThresholds:
    """Thresholds of one meter class (DESIGN.md section 6). `continuous_lph` None turns the
    continuous-flow rule off (a building's inlet always has some flow)."""

    night_lph: Decimal = Decimal(2)
    nights: int = 3
    night_start: time = time(2)
    night_end: time = time(5)
    continuous_lph: Decimal | None = Decimal(0)
    continuous_hours: int = 24
    hour_min: timedelta = timedelta(minutes=55)
    hour_max: timedelta = timedelta(minutes=75)
    edge_slack: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if self.nights < 1 or self.continuous_hours < 1:
            raise ValueError("nights and continuous_hours must be at least 1")
        if not timedelta(0) < self.hour_min <= self.hour_max:
            raise ValueError("hour_min must be positive and not above hour_max")


DEFAULT_THRESHOLDS = FlowThresholds()
# Meter classes (meters.meter_class). A building's inlet meter sees the sum of many households:
# some flow at night and in every hour is normal there, so only a larger night flow counts.
THRESHOLDS: Mapping[str, FlowThresholds] = {
    "default": DEFAULT_THRESHOLDS,
    "household": DEFAULT_THRESHOLDS,
    "building": FlowThresholds(night_lph=Decimal(20), continuous_lph=None),
}


def thresholds_for(
    meter_class: str | None, table: Mapping[str, FlowThresholds] = THRESHOLDS
) -> FlowThresholds:
    """The thresholds of `meter_class`, else the table's `default`, else the built-in ones."""
    if meter_class is not None and meter_class in table:
        return table[meter_class]
    return table.get("default", DEFAULT_THRESHOLDS)


@dataclass(frozen=True, slots=True)
class HourFlow:
    """The flow between two readings about an hour apart: `litres` in `micros` microseconds."""

    start: datetime
    end: datetime
    litres: Decimal
    micros: int

    @property
    def litres_per_hour(self) -> Decimal:
        exact = Fraction(self.litres) * _US_PER_HOUR / self.micros
        return (Decimal(exact.numerator) / Decimal(exact.denominator)).quantize(_DISPLAY)

    def exceeds(self, lph: Decimal) -> bool:
        """Whether the flow is strictly above `lph` litres per hour (exact)."""
        return self.litres * _US_PER_HOUR > lph * self.micros

    def below(self, other: HourFlow) -> bool:
        return self.litres * other.micros < other.litres * self.micros

    def to_json(self) -> dict[str, str]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "litres_per_hour": str(self.litres_per_hour),
        }


@dataclass(frozen=True, slots=True)
class NightLow:
    """The lowest hourly flow of one night's window; `low` None: no hour was measured."""

    night: date
    start: datetime
    end: datetime
    low: HourFlow | None


def hourly_flows(readings: Sequence[Reading], thresholds: FlowThresholds) -> list[HourFlow]:
    """Every hourly flow the readings allow, ordered by start.

    Only meter readings of the current index count (storage 0, not manual, not marked
    implausible); `readings` must be in time order. A pair whose index went down (a restart in
    between) is no flow and is left out.
    """
    series = [r for r in readings if r.storage == 0 and r.source != MANUAL and not r.implausible]
    stamps = [(r.measured_at - _EPOCH) // _US for r in series]
    values = [r.value for r in series]
    shortest, longest = thresholds.hour_min // _US, thresholds.hour_max // _US
    out: list[HourFlow] = []
    append = out.append
    count = len(series)
    j = 1
    for i in range(count):
        if j <= i:
            j = i + 1
        start = stamps[i]
        while j < count and stamps[j] - start < shortest:
            j += 1
        if j == count:
            break
        span = stamps[j] - start
        if span <= longest:
            rise = values[j] - values[i]
            if rise >= 0:
                append(HourFlow(series[i].measured_at, series[j].measured_at, rise * 1000, span))
    return out


def night_lows(
    flows: Sequence[HourFlow],
    nights: Sequence[date],
    thresholds: FlowThresholds,
    zone: ZoneInfo = DEFAULT_ZONE,
) -> list[NightLow]:
    """The lowest hourly flow of each of `nights` (local mornings), from `hourly_flows`."""
    starts = [f.start for f in flows]
    slack = thresholds.edge_slack
    out: list[NightLow] = []
    for night in nights:
        begins, ends = night_window(night, thresholds.night_start, thresholds.night_end, zone)
        low: HourFlow | None = None
        index = bisect_left(starts, begins - slack)
        while index < len(flows) and flows[index].start <= ends + slack:
            flow = flows[index]
            if flow.end <= ends + slack and (low is None or flow.below(low)):
                low = flow
            index += 1
        out.append(NightLow(night, begins, ends, low))
    return out


def nights_covered(
    readings: Sequence[Reading], thresholds: FlowThresholds, zone: ZoneInfo = DEFAULT_ZONE
) -> list[date]:
    """The nights whose whole window lies between the first and the last reading."""
    if not readings:
        return []
    first, last = readings[0].measured_at, readings[-1].measured_at
    day = first.astimezone(zone).date()
    out: list[date] = []
    while True:
        begins, ends = night_window(day, thresholds.night_start, thresholds.night_end, zone)
        if begins > last:
            return out
        if begins >= first - thresholds.edge_slack and ends <= last + thresholds.edge_slack:
            out.append(day)
        day += timedelta(days=1)
