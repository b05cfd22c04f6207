"""Plausibility of incoming volume readings (issue 5): kept and marked, never dropped.

A reading is compared with its reference, the last plausible reading of the meter itself before
it (a customer's manual reading is never a reference: a typo must not make the meter look
wrong):

- backwards: the index is lower than the reference. When a meter reading (not a manual one)
  drops to at most `reset_ceiling` and at most half the reference (so a young meter's index
  slipping back from 9 to 8 m3 stays an error), it is a restart instead (`reset`: a new meter or new
  electronics on the premise, DESIGN.md section 5), which starts a new segment of the index; a
  replacement recorded between the two readings does the same with its new start index.
- too_fast: the index rose more than the meter's maximum flow allows in the time since the
  reference. The maximum flow is the overload flow Q4 (EN ISO 4064-1:2014 / OIML R 49-1:2013
  clause 3: Q4 = 1.25 x Q3, the permanent flow printed on the meter), plus one display step so a
  single increment seconds after the last reading is not flagged.
- ahead_of_meter: a reading above the next meter reading when that next reading agrees with the
  reference, i.e. this reading is the outlier (a spike, a late duplicate of another meter, a
  customer's misread digit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Context, Decimal
from typing import Any, Literal

from ingest.alerts import AlertChange, opening
from ingest.series import MANUAL, REPLACEMENT, Reading, Replacement, sorted_readings

_EXACT = Context(prec=60)  # wide enough that index x microseconds products stay exact
_MICROS_PER_HOUR = 3_600_000_000
Q4_PER_Q3 = Decimal("1.25")

Status = Literal["plausible", "reset", "implausible"]


@dataclass(frozen=True, slots=True)
class Limits:
    """What a meter can do. `max_flow` is Q4 in m3/h (None: no rate check)."""

    max_flow: Decimal | None = None
    resolution: Decimal = Decimal("0.001")
    reset_ceiling: Decimal = Decimal("10")


DEFAULT_LIMITS = Limits()


def q4_from_q3(q3: Decimal) -> Decimal:
    """The overload flow of a meter with permanent flow `q3` (same unit)."""
    return q3 * Q4_PER_Q3


@dataclass(frozen=True, slots=True)
class Verdict:
    reading: Reading
    status: Status
    reason: str = ""
    reference: Reading | None = None
    allowed: Decimal | None = None  # the largest rise the meter could make (too_fast)

    @property
    def usable(self) -> bool:
        return self.status != "implausible"

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "reason": self.reason,
            "reading": _reading_json(self.reading),
        }
        if self.reference is not None:
            out["reference"] = _reading_json(self.reference)
        if self.allowed is not None:
            out["allowed_increase"] = str(self.allowed)
        return out

    def replacement(self, meter_id: str) -> Replacement | None:
        """The restart a `reset` verdict stands for, as a detected in-place replacement."""
        if self.status != "reset" or self.reference is None:
            return None
        return Replacement(
            at=self.reading.measured_at,
            old_meter_id=meter_id,
            old_final=self.reference.value,
            new_meter_id=meter_id,
            new_start=self.reading.value,
            detected=True,
        )


def implausible_alert(verdict: Verdict) -> AlertChange | None:
    """The `implausible_reading` alert an implausible verdict opens (at the reading's time)."""
    if verdict.status != "implausible":
        return None
    return opening(
        "implausible_reading", "plausibility", verdict.reading.measured_at, **verdict.evidence()
    )


def check_reading(
    reading: Reading,
    previous: Reading | None,
    *,
    following: Reading | None = None,
    limits: Limits = DEFAULT_LIMITS,
    replacements: Sequence[Replacement] = (),
) -> Verdict:
    """Judge one reading of one meter (storage 0) as it arrives.

    `previous` is the meter's last plausible non-manual reading before it, `following` its first
    after it (known when the reading arrives late); `replacements` those of this meter (its
    installation or in-place restarts).
    """
    if reading.implausible:
        return Verdict(reading, "implausible", "marked")
    reference = _reference(previous, reading, replacements)
    verdict = _against_reference(reading, reference, limits)
    if (
        verdict.status == "plausible"
        and following is not None
        and not _replaced_between(reading.measured_at, following.measured_at, replacements)
    ):
        verdict = _against_following(verdict, following, limits)
    return verdict


def screen(
    readings: Sequence[Reading],
    limits: Limits = DEFAULT_LIMITS,
    replacements: Sequence[Replacement] = (),
) -> list[Verdict]:
    """Judge a meter's storage-0 readings as a whole, in time order (registers are skipped).

    Unlike a reading judged on arrival, each reading here also sees the next meter reading, so
    an upward spike is blamed on itself, not on the readings after it.
    """
    return _walk(readings, limits, replacements, keep_plausible=True)


def findings(
    readings: Sequence[Reading],
    limits: Limits = DEFAULT_LIMITS,
    replacements: Sequence[Replacement] = (),
) -> list[Verdict]:
    """What `screen` finds that is not plain plausible (implausible readings and restarts),
    without building a verdict for every good reading: the cheap form for long series."""
    return _walk(readings, limits, replacements, keep_plausible=False)


def _walk(
    readings: Sequence[Reading],
    limits: Limits,
    replacements: Sequence[Replacement],
    *,
    keep_plausible: bool,
) -> list[Verdict]:
    series = [r for r in sorted_readings(readings) if r.storage == 0]
    following_of = _next_meter_readings(series)
    # The common case (a meter reading rising from the last one, below the next one, no rate
    # limit, no replacement) is decided inline: it is nearly every reading of a long series.
    plain = not replacements and limits.max_flow is None
    verdicts: list[Verdict] = []
    previous: Reading | None = None
    for reading, following in zip(series, following_of, strict=True):
        if (
            plain
            and previous is not None
            and reading.source != MANUAL
            and not reading.implausible
            and reading.value >= previous.value
            and (following is None or following.value >= reading.value)
        ):
            if keep_plausible:
                verdicts.append(Verdict(reading, "plausible", "", previous))
            previous = reading
            continue
        verdict = check_reading(
            reading, previous, following=following, limits=limits, replacements=replacements
        )
        if keep_plausible or verdict.status != "plausible":
            verdicts.append(verdict)
        if verdict.usable and not reading.manual:
            previous = reading
    return verdicts


def detect_replacements(meter_id: str, verdicts: Sequence[Verdict]) -> list[Replacement]:
    """The in-place restarts that `screen` found, as replacements."""
    found = (v.replacement(meter_id) for v in verdicts)
    return [r for r in found if r is not None]


def _next_meter_readings(series: Sequence[Reading]) -> list[Reading | None]:
    out: list[Reading | None] = [None] * len(series)
    upcoming: Reading | None = None
    for index in range(len(series) - 1, -1, -1):
        out[index] = upcoming
        if not series[index].manual and not series[index].implausible:
            upcoming = series[index]
    return out


def _reference(
    previous: Reading | None, reading: Reading, replacements: Sequence[Replacement]
) -> Reading | None:
    since = previous.measured_at if previous is not None else None
    latest: Replacement | None = None
    for replacement in replacements:
        after_previous = since is None or replacement.at > since
        if after_previous and replacement.at <= reading.measured_at:
            latest = replacement if latest is None or replacement.at > latest.at else latest
    if latest is None:
        return previous
    return Reading(latest.at, latest.new_start, source=REPLACEMENT)


def _replaced_between(first: datetime, last: datetime, replacements: Sequence[Replacement]) -> bool:
    return any(first < r.at <= last for r in replacements)


def _against_reference(reading: Reading, reference: Reading | None, limits: Limits) -> Verdict:
    if reference is None:
        return Verdict(reading, "plausible")
    rise = reading.value - reference.value
    if rise < 0:
        restart = (
            not reading.manual
            and reference.source != REPLACEMENT
            and reading.value <= limits.reset_ceiling
            and reading.value * 2 <= reference.value
        )
        if restart:
            return Verdict(reading, "reset", "restart", reference)
        return Verdict(reading, "implausible", "backwards", reference)
    if limits.max_flow is not None:
        elapsed = (reading.measured_at - reference.measured_at) // timedelta(microseconds=1)
        budget = _EXACT.add(
            _EXACT.multiply(limits.max_flow, Decimal(elapsed)),
            _EXACT.multiply(limits.resolution, Decimal(_MICROS_PER_HOUR)),
        )
        if _EXACT.multiply(rise, Decimal(_MICROS_PER_HOUR)) > budget:
            allowed = _EXACT.divide(budget, Decimal(_MICROS_PER_HOUR))
            return Verdict(reading, "implausible", "too_fast", reference, allowed.normalize())
    return Verdict(reading, "plausible", "", reference)


def _against_following(verdict: Verdict, following: Reading, limits: Limits) -> Verdict:
    reading, reference = verdict.reading, verdict.reference
    if following.value >= reading.value:
        return verdict
    if following.value <= limits.reset_ceiling:
        return verdict  # the next reading restarts the index; it says nothing about this one
    if reference is not None and following.value < reference.value:
        return verdict  # the next reading is the odd one: it is judged in its own turn
    return Verdict(reading, "implausible", "ahead_of_meter", following)


def _reading_json(reading: Reading) -> dict[str, Any]:
    return {
        "measured_at": reading.measured_at.isoformat(),
        "value": str(reading.value),
        "storage": reading.storage,
        "source": reading.source,
        "ref": reading.ref,
    }
