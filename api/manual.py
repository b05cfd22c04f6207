"""POST /v1/readings/manual: a reading a customer or an engineer typed in.

It is checked against the meter's history before it is stored:
- ingest.plausibility.check_reading, as the ingest judges a reading: not below the last meter
  reading (unless a replacement is declared), not a rise the meter's overload flow Q4 cannot
  make, not above the next meter reading when that one agrees with the history;
- not far above what the meter's usual consumption makes likely: more than `manual_rise_factor`
  times the average daily consumption of the 90 days before the last reading, for the days
  since it, plus a cubic metre of slack (so a meter that stood still is not flagged for one
  bath);
- a customer's reading is reported as inside or outside the reading window (25th-28th by
  default); outside is a note, not a problem.

A problem answers 422 with sentences a person can act on; the same request with
`confirm: true` stores the reading with the warnings, and manual_submissions keeps who entered
it and what they confirmed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from api.auth import BODY_RESPONSES, READINGS_WRITE, ScopedRoute, Token, current_token, scoped
from api.db import Connection, database_of, settings_of
from api.metrics import ApiMetrics
from api.models import (
    ManualReadingIn,
    ManualReadingOut,
    ManualWarning,
    ReadingWindowOut,
    Rejection,
)
from api.params import aware, bad_input, meter_key
from api.settings import Settings
from ingest.engine_marks import MARK_METER
from ingest.plausibility import Limits, Verdict, check_reading, q4_from_q3
from ingest.series import MANUAL, REPLACEMENT, Reading, Replacement

router = APIRouter(prefix="/v1/readings", tags=["readings"], route_class=ScopedRoute)

USUAL_WINDOW = timedelta(days=90)
SLACK = Decimal(1)  # m3 allowed above the likely rise
FUTURE_TOLERANCE = timedelta(minutes=10)  # clocks of phones and laptops are a little off

_METER = """
SELECT meter_id, status, removed_on, q3_m3h FROM meters WHERE meter_id = %s
"""

# Meter readings of the index (not manual ones: a typo must not become the reference).
_INDEX = """
meter_id = %(meter)s AND quantity = 'volume' AND storage = 0 AND tariff = 0 AND subunit = 0
AND function = 'instantaneous' AND NOT implausible AND source <> 'manual'
"""

_PREVIOUS = f"""
SELECT measured_at, value, source FROM readings WHERE {_INDEX} AND measured_at < %(at)s
ORDER BY measured_at DESC LIMIT 1
"""

_FOLLOWING = f"""
SELECT measured_at, value, source FROM readings WHERE {_INDEX} AND measured_at > %(at)s
ORDER BY measured_at LIMIT 1
"""

_EARLIEST_SINCE = f"""
SELECT measured_at, value, source FROM readings WHERE {_INDEX} AND measured_at >= %(at)s
ORDER BY measured_at LIMIT 1
"""

_REPLACEMENTS = """
SELECT replaced_at, old_meter_id, old_final, new_meter_id, new_start FROM meter_replacements
WHERE new_meter_id = %(meter)s OR old_meter_id = %(meter)s ORDER BY replaced_at
"""

_INSERT_READING = """
INSERT INTO readings (meter_id, quantity, storage, tariff, subunit, function, measured_at,
                      value, unit, received_at, source)
VALUES (%(meter)s, 'volume', 0, 0, 0, 'instantaneous', %(at)s, %(value)s, %(unit)s, now(),
        'manual')
ON CONFLICT DO NOTHING
"""

_EXISTING = """
SELECT value, source FROM readings
WHERE meter_id = %(meter)s AND quantity = 'volume' AND storage = 0 AND tariff = 0
  AND subunit = 0 AND function = 'instantaneous' AND measured_at = %(at)s
"""

_INSERT_SUBMISSION = """
INSERT INTO manual_submissions (meter_id, measured_at, value, unit, reader, warnings, confirmed,
                                replacement, submitted_by)
VALUES (%(meter)s, %(at)s, %(value)s, %(unit)s, %(reader)s, %(warnings)s, %(confirm)s,
        %(replacement)s, %(by)s)
"""

_INSERT_REPLACEMENT = """
INSERT INTO meter_replacements (replaced_at, old_meter_id, old_final, new_meter_id, new_start)
VALUES (%(at)s, %(meter)s, %(old_final)s, %(meter)s, %(value)s)
ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    message: str
    needs_confirmation: bool = True


def _reading(row: dict[str, Any] | None) -> Reading | None:
    if row is None:
        return None
    return Reading(row["measured_at"], row["value"], source=row["source"])


def _when(instant: datetime, settings: Settings) -> str:
    return instant.astimezone(settings.zone).strftime("%Y-%m-%d %H:%M")


def explain(verdict: Verdict, unit: str, settings: Settings) -> Finding | None:
    """What plausibility found, in words: None when the reading is plausible."""
    if verdict.status != "implausible":
        return None
    value = verdict.reading.value
    ref = verdict.reference
    if verdict.reason == "backwards" and ref is not None:
        return Finding(
            "below_last_reading",
            f"{value} {unit} is lower than the meter's reading of {ref.value} {unit} on"
            f" {_when(ref.measured_at, settings)}. A meter's index does not go backwards: check"
            " the digits (the red ones after the comma are litres), or declare that the meter"
            " was replaced.",
        )
    if verdict.reason == "too_fast" and ref is not None:
        return Finding(
            "faster_than_meter",
            f"{value} {unit} would mean {value - ref.value} {unit} since the reading of"
            f" {ref.value} {unit} on {_when(ref.measured_at, settings)}, more than this meter"
            f" can pass at its largest flow (at most {verdict.allowed} {unit}). Check the digits.",
        )
    if verdict.reason == "ahead_of_meter" and ref is not None:
        return Finding(
            "above_later_reading",
            f"{value} {unit} is higher than the meter's own later reading of {ref.value} {unit}"
            f" on {_when(ref.measured_at, settings)}. Check the digits and the date.",
        )
    return Finding("implausible", f"{value} {unit} does not fit the meter's history.")


def usual_rise(
    reading: Reading, reference: Reading, earliest: Reading | None, factor: int
) -> Decimal | None:
    """The largest rise since `reference` that the usual consumption makes likely, or None when
    there is not enough history (`earliest`: the first meter reading of the 90 days before the
    reference) to know what usual is."""
    if earliest is None or earliest.measured_at >= reference.measured_at:
        return None
    span = reference.measured_at - earliest.measured_at
    if span < timedelta(days=7) or reference.value < earliest.value:
        return None
    rate = Fraction(reference.value - earliest.value) / Fraction(span // timedelta(seconds=1))
    elapsed = Fraction((reading.measured_at - reference.measured_at) // timedelta(seconds=1))
    likely = rate * elapsed * factor + Fraction(SLACK)
    return Decimal(likely.numerator) / Decimal(likely.denominator)


@router.post(
    "/manual",
    summary="Submit a customer's or an engineer's reading",
    status_code=201,
    response_model=ManualReadingOut,
    **scoped(
        READINGS_WRITE,
        responses={
            **BODY_RESPONSES,
            200: {"model": ManualReadingOut, "description": "the same reading was stored before"},
            404: {"description": "no such meter"},
            409: {"description": "another value is stored for this meter at this instant"},
            422: {
                "model": Rejection,
                "description": "implausible: the explanation says why; confirm to store it",
            },
        },
    ),
)
async def submit_manual_reading(
    request: Request,
    body: ManualReadingIn,
    token: Annotated[Token, Depends(current_token)],
) -> Any:
    settings, db = settings_of(request), database_of(request)
    metrics: ApiMetrics = request.app.state.metrics
    now = datetime.now(UTC)
    at = aware(body.measured_at, ("body", "measured_at")) or now
    if at > now + FUTURE_TOLERANCE:
        raise bad_input(f"{at.isoformat()} is in the future", ("body", "measured_at"))
    meter = meter_key(body.meter_id)
    local_day = at.astimezone(settings.zone).day
    window = ReadingWindowOut(
        first_day=settings.reading_window.first_day,
        last_day=settings.reading_window.last_day,
        inside=settings.reading_window.contains(local_day),
    )
    async with db.connection() as conn, conn.transaction():
        findings, reference = await _check(conn, meter, at, body, settings)
        if body.reader == "customer" and not window.inside:
            findings.append(
                Finding(
                    "outside_reading_window",
                    f"Customers report between day {window.first_day} and day"
                    f" {window.last_day} of the month; this reading is of day {local_day}."
                    " It is kept, and billing moves it to the month's end by the usual"
                    " consumption.",
                    needs_confirmation=False,
                )
            )
        problems = [f for f in findings if f.needs_confirmation]
        warnings = [ManualWarning(code=f.code, message=f.message) for f in findings]
        if problems and not body.confirm:
            metrics.manual_readings.labels("rejected").inc()
            # Shaped like every 422 of the API, with what a person needs to decide.
            detail = {
                "loc": ["body", "value"],
                "msg": " ".join(f.message for f in problems)
                + " If the value is right, send it again with confirm: true.",
                "type": "implausible_reading",
                "problems": [w.model_dump() for w in warnings if w.code in _codes(problems)],
                "reading_window": window.model_dump(),
            }
            return JSONResponse({"detail": [detail]}, status_code=422)
        params: dict[str, Any] = {
            "meter": meter,
            "at": at,
            "value": body.value,
            "unit": body.unit,
            "reader": body.reader,
            "warnings": json.dumps([w.model_dump() for w in warnings]),
            "confirm": body.confirm,
            "replacement": body.replacement,
            "by": token.name,
            "old_final": None if reference is None else reference.value,
        }
        cur = await conn.execute(_INSERT_READING, params)
        stored = cur.rowcount == 1
        if not stored:
            cur = await conn.execute(_EXISTING, params)
            existing = await cur.fetchone()
            if existing is None or existing["value"] != body.value:
                shown = "another value" if existing is None else f"{existing['value']}"
                raise HTTPException(
                    409,
                    f"meter {meter} already has {shown} {body.unit} at {at.isoformat()};"
                    " a reading at the same instant cannot be changed",
                )
        else:
            await conn.execute(_INSERT_SUBMISSION, params)
            if body.replacement and reference is not None:
                await conn.execute(_INSERT_REPLACEMENT, params)
            # The ingest's engines take the reading into the monthly readings.
            await conn.execute(MARK_METER, {"meter": meter, "since": at})
    metrics.manual_readings.labels("confirmed" if problems else "stored").inc()
    out = ManualReadingOut(
        meter_id=meter,
        measured_at=at,
        value=str(body.value),
        unit=body.unit,
        stored=stored,
        warnings=warnings,
        reading_window=window,
    )
    return JSONResponse(out.model_dump(mode="json"), status_code=201 if stored else 200)


def _codes(findings: list[Finding]) -> set[str]:
    return {f.code for f in findings}


async def _check(
    conn: Connection, meter: str, at: datetime, body: ManualReadingIn, settings: Settings
) -> tuple[list[Finding], Reading | None]:
    """The findings about the reading, and the meter reading it was compared with."""
    cur = await conn.execute(_METER, (meter,))
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no meter {meter} in the registry")
    removed_on = row["removed_on"]
    if removed_on is not None and at.astimezone(settings.zone).date() > removed_on:
        raise bad_input(
            f"meter {meter} was removed on {removed_on}; it cannot be read after that",
            ("body", "measured_at"),
        )
    q3 = row["q3_m3h"]
    limits = Limits(max_flow=None if q3 is None else q4_from_q3(q3))
    params = {"meter": meter, "at": at}
    cur = await conn.execute(_PREVIOUS, params)
    previous = _reading(await cur.fetchone())
    cur = await conn.execute(_FOLLOWING, params)
    following = _reading(await cur.fetchone())
    cur = await conn.execute(_REPLACEMENTS, params)
    replacements = [
        Replacement(
            r["replaced_at"], r["old_meter_id"], r["old_final"], r["new_meter_id"], r["new_start"]
        )
        for r in await cur.fetchall()
    ]
    reading = Reading(at, body.value, source=MANUAL)
    verdict = check_reading(
        reading, previous, following=following, limits=limits, replacements=replacements
    )
    findings: list[Finding] = []
    finding = explain(verdict, body.unit, settings)
    if finding is not None and not (body.replacement and finding.code == "below_last_reading"):
        findings.append(finding)
    reference = verdict.reference
    # After a replacement the meter's history says nothing about the new index's rise.
    if verdict.status == "plausible" and reference is not None and reference.source != REPLACEMENT:
        cur = await conn.execute(
            _EARLIEST_SINCE, {"meter": meter, "at": reference.measured_at - USUAL_WINDOW}
        )
        earliest = _reading(await cur.fetchone())
        likely = usual_rise(reading, reference, earliest, settings.manual_rise_factor)
        rise = body.value - reference.value
        if likely is not None and rise > likely:
            findings.append(
                Finding(
                    "above_usual",
                    f"{body.value} {body.unit} means {rise} {body.unit} since the reading of"
                    f" {reference.value} {body.unit} on {_when(reference.measured_at, settings)},"
                    f" far more than this meter's usual consumption makes likely (up to about"
                    f" {likely.quantize(Decimal('0.1'))} {body.unit}). Check the digits, or"
                    " look for a leak.",
                )
            )
    return findings, previous
