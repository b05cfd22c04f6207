"""Local-time boundaries the engines work on: billing months and night windows.

Instants are timezone-aware and UTC everywhere; only the rules that speak of local time (DESIGN.md
sections 5 and 6) pass through the utility's zone, here and nowhere else. A wall-clock time
that a DST change skips or repeats is resolved with `fold=0` (zoneinfo's default): a skipped
00:00 becomes the first instant of the day (the transition itself) and a repeated one its first
occurrence, so a boundary is always the first instant of its local day. In Europe/Riga both
changes happen at 03:00/04:00 local, so midnight and the 02:00-05:00 night edges always exist.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DEFAULT_ZONE = ZoneInfo("Europe/Riga")

_PERIOD = re.compile(r"(\d{4})-(\d{2})")


def require_utc(instant: datetime, what: str = "instant") -> datetime:
    """`instant` as UTC; a naive datetime is refused, since its zone would be a guess."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {instant.isoformat()}")
    return instant.astimezone(UTC)


def local_midnight(day: date, zone: ZoneInfo = DEFAULT_ZONE) -> datetime:
    """The UTC instant at which local `day` begins."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def period_start(period: date) -> date:
    """The first day of the month `period` lies in (periods are named by their first day)."""
    return period.replace(day=1)


def next_period(period: date) -> date:
    start = period_start(period)
    return date(start.year + 1, 1, 1) if start.month == 12 else date(start.year, start.month + 1, 1)


def previous_period(period: date) -> date:
    start = period_start(period)
    return date(start.year - 1, 12, 1) if start.month == 1 else date(start.year, start.month - 1, 1)


def shift_periods(period: date, months: int) -> date:
    start = period_start(period)
    index = start.year * 12 + start.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def month_boundary(period: date, zone: ZoneInfo = DEFAULT_ZONE) -> datetime:
    """The billing boundary of `period` (DESIGN.md section 5): 00:00 local time on the first day
    of the next month, as a UTC instant."""
    return local_midnight(next_period(period), zone)


def period_of(instant: datetime, zone: ZoneInfo = DEFAULT_ZONE) -> date:
    """The period (first day of the local month) that `instant` falls in."""
    local = require_utc(instant).astimezone(zone)
    return date(local.year, local.month, 1)


def last_closed_period(now: datetime, zone: ZoneInfo = DEFAULT_ZONE) -> date:
    """The latest period whose boundary has passed at `now`: the month before the local one."""
    return previous_period(period_of(now, zone))


def parse_period(text: str) -> date:
    """`YYYY-MM` as the period's first day; anything else is a ValueError naming the text."""
    match = _PERIOD.fullmatch(text.strip())
    if match is None or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1:
        raise ValueError(f"a period is written YYYY-MM (e.g. 2026-10), got {text!r}")
    return date(int(match.group(1)), int(match.group(2)), 1)


def night_window(
    night: date, start: time, end: time, zone: ZoneInfo = DEFAULT_ZONE
) -> tuple[datetime, datetime]:
    """The UTC instants of the local night window ending on the morning of `night`.

    A window whose start is not before its end (e.g. 23:00-05:00) begins on the evening before.
    The window is wall-clock time, so on a DST night it lasts an hour less (spring) or more
    (autumn) than usual: in Riga 02:00-05:00 is 2 real hours on the last Sunday of March and 4 on
    the last Sunday of October.
    """
    first_day = night if start < end else night - timedelta(days=1)
    begins = datetime.combine(first_day, start, tzinfo=zone).astimezone(UTC)
    ends = datetime.combine(night, end, tzinfo=zone).astimezone(UTC)
    return begins, ends
