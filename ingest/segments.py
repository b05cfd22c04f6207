"""A meter's index history cut into runs ("segments") at its replacements.

Within a segment the index only grows: the readings have been screened (ingest.plausibility),
implausible ones are left out, and every replacement, recorded or detected as a restart, cuts
the history. The cut's old final index closes the segment before it, its new start index opens
the one after it (both count as readings at the cut, source `replacement`). A reading at the
cut instant belongs to the new segment; the boundary instant of a month that falls exactly on a
cut belongs to the old one, so that month closes on the old meter's final index.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from operator import attrgetter

from ingest.plausibility import Limits, detect_replacements, findings
from ingest.series import (
    MANUAL,
    REPLACEMENT,
    Reading,
    Replacement,
    replacements_of,
    sorted_readings,
)

MICROSECOND = timedelta(microseconds=1)
_AT = attrgetter("measured_at")


@dataclass(slots=True)
class Segment:
    points: list[Reading] = field(default_factory=list)  # meter readings and cut endpoints
    manual: list[Reading] = field(default_factory=list)  # plausible customer readings
    times: list[datetime] = field(default_factory=list)

    def seal(self, *, ordered: bool = False) -> None:
        """Make the segment ready for lookups; `ordered`: the points are already in order."""
        if not ordered:
            self.points.sort(key=_AT)
        self.times = [r.measured_at for r in self.points]

    def last_before(self, t: datetime) -> Reading | None:
        index = bisect_left(self.times, t)
        return self.points[index - 1] if index else None

    def first_after(self, t: datetime) -> Reading | None:
        index = bisect_right(self.times, t)
        return self.points[index] if index < len(self.points) else None

    def nearest(self, t: datetime, tolerance: timedelta) -> Reading | None:
        """The point closest to `t` within `tolerance`; on a tie, the earlier one."""
        index = bisect_left(self.times, t)
        best: Reading | None = None
        for candidate in self.points[max(index - 1, 0) : index + 2]:
            distance = abs(candidate.measured_at - t)
            if distance <= tolerance and (best is None or distance < abs(best.measured_at - t)):
                best = candidate
        return best

    def bracket(self, t: datetime, max_gap: timedelta) -> tuple[Reading, Reading] | None:
        """The last point before and the first after `t`, when they are close enough to
        interpolate between (at most `max_gap` apart, the index not going backwards)."""
        before, after = self.last_before(t), self.first_after(t)
        if before is None or after is None:
            return None
        if after.measured_at - before.measured_at > max_gap or after.value < before.value:
            return None
        return before, after

    def index_at(
        self, t: datetime, tolerance: timedelta, max_gap: timedelta
    ) -> tuple[Fraction, tuple[Reading, ...]] | None:
        """The index at `t`: a point within `tolerance`, else linear interpolation in real time
        between its neighbours; None when neither is possible."""
        near = self.nearest(t, tolerance)
        if near is not None:
            return Fraction(near.value), (near,)
        pair = self.bracket(t, max_gap)
        if pair is None:
            return None
        return interpolate(pair[0], pair[1], t), pair


def interpolate(before: Reading, after: Reading, t: datetime) -> Fraction:
    """The exact index at `t` on the straight line between two readings, in real (UTC) time, so
    a 23 h or 25 h local day inside the gap weighs what it lasted."""
    span = (after.measured_at - before.measured_at) // MICROSECOND
    part = (t - before.measured_at) // MICROSECOND
    rise = Fraction(after.value) - Fraction(before.value)
    return Fraction(before.value) + rise * part / span


@dataclass(slots=True)
class History:
    """A meter's segments, its month-end registers and when it was on the premise."""

    meter_id: str
    cuts: list[datetime]
    segments: list[Segment]
    registers: list[Reading]
    replacements: list[Replacement]  # registry events and detected restarts, time order

    def segment_at(self, t: datetime) -> Segment:
        return self.segments[bisect_left(self.cuts, t)]

    def segment_index(self, t: datetime) -> int:
        return bisect_left(self.cuts, t)

    def active_at(self, t: datetime) -> bool:
        """Whether the meter was on the premise at `t` (a removal exactly at `t` still counts:
        its final index is the value at `t`)."""
        state: bool | None = None
        for replacement in self.replacements:
            if replacement.at > t:
                if state is None and replacement.installs(self.meter_id):
                    return False
                break
            if replacement.installs(self.meter_id):
                state = True
            elif replacement.removes(self.meter_id):
                state = replacement.at == t
        return state is not False


def build_history(
    meter_id: str,
    readings: Sequence[Reading],
    replacements: Sequence[Replacement],
    limits: Limits,
) -> History:
    """Screen `readings` and cut them at `replacements` (and at the restarts screening finds)."""
    ordered = sorted_readings(readings)
    registers = [r for r in ordered if r.storage >= 1 and not r.implausible]
    mine = replacements_of(meter_id, replacements)
    found = findings(ordered, limits, [r for r in mine if not r.removes(meter_id)])
    every = sorted([*mine, *detect_replacements(meter_id, found)], key=lambda r: r.at)
    cuts = sorted({r.at for r in every})
    segments = [Segment() for _ in range(len(cuts) + 1)]
    unusable = {id(v.reading) for v in found if not v.usable}
    for reading in ordered:
        if reading.storage != 0 or id(reading) in unusable:
            continue
        segment = segments[bisect_right(cuts, reading.measured_at)] if cuts else segments[0]
        (segment.manual if reading.source == MANUAL else segment.points).append(reading)
    for replacement in every:
        index = bisect_left(cuts, replacement.at)
        ref = "detected" if replacement.detected else None
        if not replacement.installs(meter_id):
            segments[index].points.append(
                Reading(replacement.at, replacement.old_final, source=REPLACEMENT, ref=ref)
            )
        if not replacement.removes(meter_id):
            segments[index + 1].points.append(
                Reading(replacement.at, replacement.new_start, source=REPLACEMENT, ref=ref)
            )
    for segment in segments:
        segment.seal(ordered=not cuts)
    return History(meter_id, cuts, segments, registers, every)
