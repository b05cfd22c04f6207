"""What the monthly engine returns, how revisions are decided, and consumption across meters.

A `MonthlyResult` is one `monthly_readings` row (DESIGN.md sections 4 and 5); `evidence_json()`
is its `evidence` column and `MonthlyResult.from_row` reads a stored row back, so `supersedes`
can compare a new result with the stored one.

Revision rule (`supersedes`): a result of a more trusted method always replaces a less trusted
one; a less trusted one never replaces. Within one method, the new result replaces the stored
one only when its evidence is closer to the boundary (`spread`: the time its positional readings
and the boundary span; for interpolation the gap between the two neighbours), or equally close
with different readings and a different value (e.g. an estimate now bounded by a reading that
arrived after the boundary, or a customer's corrected reading on the same day). Recomputing from
the same or equally good data never makes a revision, so late duplicates do not churn billing's
history. A period already exported keeps its old revisions; the storage side keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, cast

from ingest.plausibility import DEFAULT_LIMITS, Limits
from ingest.series import Replacement

Method = Literal["register", "actual", "interpolated", "customer", "estimated"]
TRUST: tuple[Method, ...] = ("register", "actual", "interpolated", "customer", "estimated")
RateBasis = Literal["same_period_last_year", "last_90_days", "none"]

# Evidence roles that place the value in time (the rest document how it was moved).
POSITIONAL = frozenset({"register", "reading", "before", "after", "customer", "anchor"})


@dataclass(frozen=True, slots=True)
class MonthlyRules:
    """The knobs of DESIGN.md section 5, with its defaults.

    `resolution` is the meter's display step (a power of ten): derived values are rounded half
    to even to it, or to the finer step of the readings they come from, so a derived value never
    leaves the interval its readings span. `settle` is how long after the boundary the engine
    waits for a reading before it falls back to a customer reading or an estimate.
    """

    actual_tolerance: timedelta = timedelta(hours=1)
    max_gap: timedelta = timedelta(days=7)
    customer_window: timedelta = timedelta(days=10)
    settle: timedelta = timedelta(days=2)
    history: timedelta = timedelta(days=90)
    resolution: Decimal = Decimal("0.001")
    limits: Limits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        exponent = self.resolution.as_tuple().exponent
        if not isinstance(exponent, int) or self.resolution != Decimal(1).scaleb(exponent):
            raise ValueError(f"resolution must be a power of ten, got {self.resolution}")


@dataclass(frozen=True, slots=True)
class Evidence:
    """A reading a result was derived from, and the part it played (`role`)."""

    role: str
    measured_at: datetime
    value: Decimal
    storage: int = 0
    source: str = ""
    ref: str | int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "measured_at": self.measured_at.isoformat(),
            "value": str(self.value),
            "storage": self.storage,
            "source": self.source,
            "ref": self.ref,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evidence:
        return cls(
            role=str(data["role"]),
            measured_at=datetime.fromisoformat(str(data["measured_at"])),
            value=Decimal(str(data["value"])),
            storage=int(data.get("storage", 0)),
            source=str(data.get("source", "")),
            ref=data.get("ref"),
        )


@dataclass(frozen=True, slots=True)
class RatePiece:
    """The average consumption used over [start, end] (m3 per day, for display: the value was
    computed with the exact rate) and where it came from."""

    start: datetime
    end: datetime
    per_day: Decimal
    basis: RateBasis

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "per_day": str(self.per_day),
            "basis": self.basis,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RatePiece:
        return cls(
            start=datetime.fromisoformat(str(data["start"])),
            end=datetime.fromisoformat(str(data["end"])),
            per_day=Decimal(str(data["per_day"])),
            basis=cast(RateBasis, str(data["basis"])),
        )


@dataclass(frozen=True, slots=True)
class MonthlyResult:
    meter_id: str
    period: date
    boundary: datetime
    value: Decimal
    unit: str
    method: Method
    evidence: tuple[Evidence, ...]
    rates: tuple[RatePiece, ...] = ()

    @property
    def spread(self) -> timedelta:
        """How far the positional evidence reaches from the boundary (0 for a register)."""
        instants = [self.boundary]
        for item in self.evidence:
            if item.role in POSITIONAL:
                instants.append(self.boundary if item.role == "register" else item.measured_at)
        return max(instants) - min(instants)

    def evidence_json(self) -> dict[str, Any]:
        return {
            "readings": [item.to_json() for item in self.evidence],
            "rates": [piece.to_json() for piece in self.rates],
        }

    @classmethod
    def from_row(
        cls,
        *,
        meter_id: str,
        period: date,
        boundary: datetime,
        value: Decimal,
        unit: str,
        method: str,
        evidence: Mapping[str, Any],
    ) -> MonthlyResult:
        if method not in TRUST:
            raise ValueError(f"unknown monthly method {method!r}")
        return cls(
            meter_id=meter_id,
            period=period,
            boundary=boundary,
            value=value,
            unit=unit,
            method=method,
            evidence=tuple(Evidence.from_json(item) for item in evidence.get("readings", ())),
            rates=tuple(RatePiece.from_json(item) for item in evidence.get("rates", ())),
        )


def supersedes(old: MonthlyResult, new: MonthlyResult) -> bool:
    """Whether `new` becomes the next revision of the stored `old` (module docstring)."""
    if (old.meter_id, old.period) != (new.meter_id, new.period):
        raise ValueError("a revision must be of the same meter and period")
    old_rank, new_rank = TRUST.index(old.method), TRUST.index(new.method)
    if new_rank != old_rank:
        return new_rank < old_rank
    if new.spread != old.spread:
        return new.spread < old.spread
    return new.value != old.value and new.evidence != old.evidence


@dataclass(frozen=True, slots=True)
class Consumption:
    """Water used between two billing determinants. `parts` are the volumes on each meter (or
    each run of one meter's index) in order, before a negative part is counted as zero;
    `clamped` says that happened, which billing should see as a data problem."""

    volume: Decimal
    parts: tuple[Decimal, ...]
    clamped: bool


def consumption(
    opening: MonthlyResult, closing: MonthlyResult, replacements: Sequence[Replacement] = ()
) -> Consumption:
    """The volume between `opening` and `closing`, across the replacements between them.

    `replacements` are registry events and detected restarts (`Verdict.replacement`); each one
    on the way from the opening meter to the closing meter ends a part at its old final index
    and starts the next at its new start index, so a new meter is never billed as negative
    consumption. A replacement exactly at the opening boundary is on the way (the opening value
    is the old meter's final index); one exactly at the closing boundary only when the closing
    result belongs to the new meter.
    """
    if opening.boundary > closing.boundary:
        raise ValueError("the opening determinant must not be after the closing one")
    current, value = opening.meter_id, opening.value
    parts: list[Decimal] = []
    for replacement in sorted(replacements, key=lambda r: r.at):
        if not opening.boundary <= replacement.at <= closing.boundary:
            continue
        if replacement.old_meter_id != current:
            continue
        if replacement.at == closing.boundary and current == closing.meter_id:
            continue
        parts.append(replacement.old_final - value)
        current, value = replacement.new_meter_id, replacement.new_start
    if current != closing.meter_id:
        raise ValueError(
            f"no replacement leads from {opening.meter_id} to {closing.meter_id} "
            f"between {opening.boundary.isoformat()} and {closing.boundary.isoformat()}"
        )
    parts.append(closing.value - value)
    clamped = any(part < 0 for part in parts)
    volume = sum((max(part, Decimal(0)) for part in parts), Decimal(0))
    return Consumption(volume, tuple(parts), clamped)
