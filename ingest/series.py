"""The values the engines read: a meter's volume readings and its replacements.

The storage side builds these from `readings` rows of one meter (quantity `volume`, tariff 0,
subunit 0, function instantaneous, one unit) and from the meter registry. The engines never
touch the database; they take these values and return theirs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from operator import attrgetter

from ingest.boundaries import require_utc

MANUAL = "manual"  # readings.source of a reading a customer (or a reader) typed in
REPLACEMENT = "replacement"  # the source the engines give a replacement's recorded index
_ORDER = attrgetter("measured_at", "storage")


@dataclass(frozen=True, slots=True)
class Reading:
    """One volume index of one meter.

    `storage` 0 is the current index at `measured_at`; storage n >= 1 a register the meter stored
    (month-end values), its `measured_at` taken from the date of the same storage number
    (DESIGN.md section 2). `source` is readings.source (`wmbus`, `mbus`, `modbus`, `manual`,
    `import`). `ref` is whatever identifies the row for the storage side; it comes back in
    evidence. `implausible` is the storage side's mark from plausibility; such a reading is kept
    but never used.
    """

    measured_at: datetime
    value: Decimal
    storage: int = 0
    source: str = "wmbus"
    ref: str | int | None = None
    implausible: bool = False

    @property
    def manual(self) -> bool:
        return self.source == MANUAL


@dataclass(frozen=True, slots=True)
class Replacement:
    """A meter swapped at `at`: the old one ended at `old_final`, the new one began at `new_start`.

    Registry events name two meters; an index that restarted in place (the same meter id, e.g.
    new electronics, or a restart that plausibility detected) names the same meter twice.
    `detected` marks the second kind when it was inferred from the readings alone: then
    `old_final` is the last reading before the restart, so water used between that reading and
    the actual swap is never billed (it is unknown, and billing must not guess upwards).
    """

    at: datetime
    old_meter_id: str
    old_final: Decimal
    new_meter_id: str
    new_start: Decimal
    detected: bool = False

    def installs(self, meter_id: str) -> bool:
        return self.new_meter_id == meter_id and self.old_meter_id != meter_id

    def removes(self, meter_id: str) -> bool:
        return self.old_meter_id == meter_id and self.new_meter_id != meter_id


def sorted_readings(readings: Iterable[Reading]) -> list[Reading]:
    """Readings in time order, every instant checked to be timezone-aware."""
    out = list(readings)
    for reading in out:
        if reading.measured_at.tzinfo is None:
            require_utc(reading.measured_at, "measured_at")
    out.sort(key=_ORDER)
    return out


def replacements_of(meter_id: str, replacements: Sequence[Replacement]) -> list[Replacement]:
    """The replacements that concern `meter_id`, in time order."""
    return sorted(
        (r for r in replacements if meter_id in (r.old_meter_id, r.new_meter_id)),
        key=lambda r: r.at,
    )


def quantum_of(*values: Decimal) -> int:
    """The finest decimal exponent among `values` (e.g. -3 for 12.345)."""
    exponents = [v.as_tuple().exponent for v in values]
    return min(e for e in exponents if isinstance(e, int))
