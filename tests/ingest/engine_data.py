"""Readings for the engine tests: exact index series built from flows in litres per hour."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ingest.series import MANUAL, Reading

FAR_FUTURE = datetime(2030, 1, 1, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def series(
    start: datetime,
    end: datetime,
    step: timedelta,
    litres_per_hour: Callable[[datetime], int] | int,
    *,
    first: Decimal = Decimal("100.000"),
) -> list[Reading]:
    """Readings from `start` to `end` (inclusive) every `step`, the index rising by the given
    flow over each step (a function of the step's start, or a constant), exact to the litre."""
    flow = litres_per_hour if callable(litres_per_hour) else (lambda _t: litres_per_hour)
    out: list[Reading] = []
    litres = Decimal(0)
    t = start
    while t <= end:
        out.append(Reading(t, first + litres / 1000, ref=len(out)))
        hours = Decimal(step // timedelta(seconds=1)) / 3600
        litres += Decimal(flow(t)) * hours
        t += step
    return out


def manual(at: datetime, value: str) -> Reading:
    return Reading(at, Decimal(value), source=MANUAL, ref=f"manual-{at.isoformat()}")


def register(at: datetime, value: str, storage: int = 1) -> Reading:
    return Reading(at, Decimal(value), storage=storage, ref=f"register-{storage}")
