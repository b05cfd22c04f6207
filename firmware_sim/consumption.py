"""How much water a simulated meter counts: consumption profiles and events, in closed form.

A profile is a daily volume shaped by 24 hourly weights (a household, an office or a whole
building), weekend days scaled, and a day-to-day variation that sums to zero over each week.
That keeps the cumulative volume closed-form (full weeks times the weekly volume, plus the
current week): litres(t) costs the same a year after the epoch as an hour after it. Days follow
local standard time (UTC+2, Riga in winter) all year, so every day has 24 hours; DST is ignored
by the water users. Events add to the pattern: a leak (a constant flow from a night onwards), a
burst (a short heavy flow), reverse flow (negative) and a dry pipe (no flow at all).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Literal

LOCAL_STANDARD_TIME = timezone(timedelta(hours=2))
_ANCHOR = datetime(2001, 1, 1, tzinfo=LOCAL_STANDARD_TIME)  # a Monday: weeks start here
_DAY = 86_400
_WEEK = 7 * _DAY

# Hourly weights of the daily volume (hour 0 = 00:00-01:00 local) and the weekend factor.
PATTERNS: dict[str, tuple[tuple[int, ...], Fraction]] = {
    "household": (
        (0, 0, 0, 0, 0, 1, 4, 8, 6, 3, 2, 2, 3, 2, 2, 2, 3, 5, 7, 8, 6, 4, 2, 1),
        Fraction(6, 5),
    ),
    "office": (
        (0, 0, 0, 0, 0, 0, 1, 3, 6, 6, 5, 5, 7, 6, 5, 5, 4, 2, 1, 0, 0, 0, 0, 0),
        Fraction(1, 20),
    ),
    "building": (
        (1, 1, 1, 1, 1, 2, 5, 9, 8, 5, 4, 4, 5, 4, 4, 4, 5, 7, 9, 9, 8, 6, 3, 2),
        Fraction(11, 10),
    ),
}
DAILY_LITRES = {"household": (150, 600), "office": (500, 3000), "building": (3000, 20000)}

EventKind = Literal["leak", "burst", "backflow", "dry"]


def seconds(t: datetime) -> Fraction:
    """Seconds from the model's anchor to `t`, exact."""
    if t.tzinfo is None:
        raise ValueError("the fleet model takes timezone-aware instants")
    delta = t - _ANCHOR
    return Fraction(delta.days * _DAY + delta.seconds) + Fraction(delta.microseconds, 10**6)


def _unit_noise(seed: int, week: int, day: int) -> Fraction:
    """A deterministic variation of -15 % .. +15 % for one day."""
    digest = hashlib.blake2b(f"{seed}:{week}:{day}".encode(), digest_size=8).digest()
    return Fraction(int.from_bytes(digest, "big") % 31 - 15, 100)


@lru_cache(maxsize=65536)
def _day_volumes(daily: int, pattern: str, seed: int, week: int) -> tuple[Fraction, ...]:
    """The litres of the 7 days of a week; they always add up to the same weekly volume."""
    weekend = PATTERNS[pattern][1]
    bases = [Fraction(daily) * (weekend if day >= 5 else 1) for day in range(7)]
    total = sum(bases)
    if total == 0:
        return tuple(bases)
    noise = [_unit_noise(seed, week, day) for day in range(7)]
    mean = sum(b * n for b, n in zip(bases, noise, strict=True)) / total
    return tuple(b * (1 + n - mean) for b, n in zip(bases, noise, strict=True))


def litres_to_m3(litres: int) -> Decimal:
    return Decimal(litres).scaleb(-3)


@dataclass(frozen=True, slots=True)
class Event:
    """Extra flow from `start` until `end` (None: it never stops), in litres per hour.

    A leak or a burst adds a positive rate, reverse flow a negative one; a dry pipe stops all
    flow, the pattern's and the other events', while it lasts.
    """

    kind: EventKind
    start: datetime
    end: datetime | None = None
    rate_lph: int = 0

    def __post_init__(self) -> None:
        expected = {"leak": 1, "burst": 1, "backflow": -1, "dry": 0}[self.kind]
        if (self.rate_lph > 0) - (self.rate_lph < 0) != expected:
            raise ValueError(f"a {self.kind} event cannot have a rate of {self.rate_lph} l/h")
        if self.end is not None and self.end <= self.start:
            raise ValueError("an event ends after it starts")

    def active(self, t: datetime) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


@dataclass(frozen=True, slots=True)
class ConsumptionProfile:
    """One metering point's water: a pattern, its daily volume and noise seed, its events."""

    pattern: str = "household"
    daily_litres: int = 300
    noise_seed: int = 0
    events: tuple[Event, ...] = ()

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown consumption pattern {self.pattern!r}")
        if len([e for e in self.events if e.kind == "dry"]) > 1:
            raise ValueError("at most one dry-pipe event per meter")

    def _base(self, s: Fraction) -> Fraction:
        """Pattern litres from the anchor to `s` seconds after it (negative before it)."""
        weights, _ = PATTERNS[self.pattern]
        week, rest = divmod(s, _WEEK)
        volumes = _day_volumes(self.daily_litres, self.pattern, self.noise_seed, int(week))
        total = week * sum(volumes)
        day = int(rest // _DAY)
        total += sum(volumes[:day])
        in_day = rest - day * _DAY
        hour = int(in_day // 3600)
        done = sum(weights[:hour]) + (in_day - hour * 3600) / 3600 * weights[hour]
        return total + volumes[day] * done / sum(weights)

    def _dry(self) -> tuple[Fraction, Fraction | None] | None:
        for event in self.events:
            if event.kind == "dry":
                return seconds(event.start), seconds(event.end) if event.end else None
        return None

    @staticmethod
    def _overlap(a: Fraction, b: Fraction | None, until: Fraction) -> Fraction:
        end = until if b is None else min(b, until)
        return max(Fraction(0), end - a)

    def litres(self, t: datetime, *, backward_only: bool = False) -> Fraction:
        """Net litres through the meter from the anchor to `t` (backflow counts negative)."""
        s = seconds(t)
        dry = self._dry()
        total = Fraction(0) if backward_only else self._base(s)
        if dry is not None and not backward_only and s > dry[0]:
            end = s if dry[1] is None else min(s, dry[1])
            total -= self._base(end) - self._base(dry[0])
        for event in self.events:
            if event.kind == "dry" or (backward_only and event.kind != "backflow"):
                continue
            a = seconds(event.start)
            b = seconds(event.end) if event.end else None
            duration = self._overlap(a, b, s)
            if dry is not None and duration:
                # The dry window cuts into the event: [max(a, d0), min(b, d1, s)].
                low = max(a, dry[0])
                high = min(x for x in (b, dry[1], s) if x is not None)
                duration -= max(Fraction(0), high - low)
            total += event.rate_lph * duration / 3600
        return total

    def flow_at(self, t: datetime) -> Decimal:
        """Volume flow at `t` in m3/h, to the litre per hour."""
        if any(e.kind == "dry" and e.active(t) for e in self.events):
            return Decimal(0)
        weights, _ = PATTERNS[self.pattern]
        s = seconds(t)
        week, rest = divmod(s, _WEEK)
        volumes = _day_volumes(self.daily_litres, self.pattern, self.noise_seed, int(week))
        day = int(rest // _DAY)
        hour = int((rest - day * _DAY) // 3600)
        rate = volumes[day] * weights[hour] / sum(weights)
        rate += sum(e.rate_lph for e in self.events if e.active(t))
        return litres_to_m3(round(rate))

    def flags_at(self, t: datetime) -> frozenset[str]:
        """The events going on at `t`: the truth a meter's alarms approximate."""
        return frozenset(e.kind for e in self.events if e.active(t))
