"""GET /v1/meters, /v1/meters/{id}, /v1/meters/{id}/readings, /v1/meters/{id}/consumption."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request

from api import consumption
from api.auth import READINGS_READ, ScopedRoute, scoped
from api.db import Connection, database_of, settings_of
from api.models import (
    Alert,
    Bucket,
    ConsumptionSeries,
    LastReading,
    MeterDetail,
    MeterPage,
    MeterSummary,
    ReadingPage,
)
from api.params import (
    MeterIdPath,
    aware,
    bad_input,
    cursor_query,
    decode_cursor,
    encode_cursor,
    limit_query,
    meter_key,
    page_of,
)
from api.settings import Settings
from ingest.boundaries import shift_periods
from ingest.series import Reading as IndexReading
from ingest.series import quantum_of

router = APIRouter(prefix="/v1/meters", tags=["meters"], route_class=ScopedRoute)

_SUMMARY = """
m.meter_id, m.serial, m.manufacturer, m.medium, m.kind, m.model, m.premise, m.address,
m.customer_ref, m.contract_ref, m.status, m.installed_on, m.removed_on, m.verified_on,
m.next_verification_due
"""

_LIST = f"""
SELECT {_SUMMARY} FROM meters m
WHERE (%(medium)s::text IS NULL OR m.medium = %(medium)s)
  AND (%(premise)s::text IS NULL OR m.premise = %(premise)s)
  AND (%(status)s::text IS NULL OR m.status = %(status)s)
  AND (%(due_by)s::date IS NULL OR m.next_verification_due <= %(due_by)s)
  AND (%(q)s::text IS NULL OR m.meter_id ILIKE %(q)s OR m.serial ILIKE %(q)s
       OR m.premise ILIKE %(q)s OR m.address ILIKE %(q)s OR m.customer_ref ILIKE %(q)s
       OR m.contract_ref ILIKE %(q)s)
  AND (%(after)s::text IS NULL OR m.meter_id > %(after)s)
ORDER BY m.meter_id
LIMIT %(limit)s
"""

_DETAIL = f"""
SELECT {_SUMMARY}, m.country, m.meter_class, m.q3_m3h::text AS q3_m3h,
       m.verification_interval_years
FROM meters m WHERE m.meter_id = %s
"""

# The meter's volume index: the series the monthly engine bills (ingest.series).
_INDEX = """
meter_id = %(meter)s AND quantity = 'volume' AND storage = 0 AND tariff = 0 AND subunit = 0
AND function = 'instantaneous' AND NOT implausible
"""

_LAST_READING = f"""
SELECT measured_at, value, unit, source FROM readings WHERE {_INDEX}
ORDER BY measured_at DESC LIMIT 1
"""

_OPEN_ALERTS = """
SELECT id, meter_id, kind, rule, opened_at, closed_at, evidence FROM alerts
WHERE meter_id = %s AND closed_at IS NULL ORDER BY opened_at, id
"""

_READINGS = """
SELECT measured_at, quantity, value, unit, storage, tariff, subunit, function, received_at,
       source, gateway_id, implausible
FROM readings
WHERE meter_id = %(meter)s AND measured_at >= %(from)s AND measured_at < %(to)s
  AND (%(quantity)s::text IS NULL OR quantity = %(quantity)s)
  AND (%(after_at)s::timestamptz IS NULL
       OR (measured_at, quantity, storage, tariff, subunit, function)
          > (%(after_at)s, %(after_quantity)s, %(after_storage)s, %(after_tariff)s,
             %(after_subunit)s, %(after_function)s))
ORDER BY measured_at, quantity, storage, tariff, subunit, function
LIMIT %(limit)s
"""

# For each edge: the last index reading at or before it and the first at or after it.
_EDGES = f"""
SELECT e.edge, b.measured_at AS b_at, b.value AS b_value, b.unit AS b_unit,
       a.measured_at AS a_at, a.value AS a_value, a.unit AS a_unit
FROM unnest(%(edges)s::timestamptz[]) AS e (edge)
LEFT JOIN LATERAL (
    SELECT measured_at, value, unit FROM readings
    WHERE {_INDEX} AND measured_at <= e.edge ORDER BY measured_at DESC LIMIT 1
) b ON true
LEFT JOIN LATERAL (
    SELECT measured_at, value, unit FROM readings
    WHERE {_INDEX} AND measured_at >= e.edge ORDER BY measured_at LIMIT 1
) a ON true
ORDER BY e.edge
"""


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def _meter_row(conn: Connection, meter_id: str) -> dict[str, Any]:
    cur = await conn.execute(_DETAIL, (meter_id,))
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no meter {meter_id} in the registry")
    return row


@router.get("", summary="Meters", response_model=MeterPage, **scoped(READINGS_READ))
async def list_meters(
    request: Request,
    *,
    medium: Annotated[str | None, Query(max_length=64)] = None,
    premise: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[Literal["active", "removed", "unregistered"] | None, Query()] = None,
    verification_due_within_days: Annotated[
        int | None, Query(ge=0, le=36500, description="due within this many days, or overdue")
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            description="search text: part of the meter id, serial, premise, address,"
            " customer or contract reference",
        ),
    ] = None,
    cursor: Annotated[str | None, cursor_query()] = None,
    limit: Annotated[int, limit_query()] = 100,
) -> MeterPage:
    due_by = None
    if verification_due_within_days is not None:
        due_by = _today(settings_of(request)) + timedelta(days=verification_due_within_days)
    after = decode_cursor(cursor, str)[0] if cursor is not None else None
    params = {
        "medium": medium,
        "premise": premise,
        "status": status,
        "due_by": due_by,
        "q": None if q is None else _like(q),
        "after": after,
        "limit": limit + 1,
    }
    async with database_of(request).connection() as conn:
        cur = await conn.execute(_LIST, params)
        rows = await cur.fetchall()
    rows, next_cursor = page_of(rows, limit, lambda last: encode_cursor(last["meter_id"]))
    return MeterPage(
        items=[MeterSummary.model_validate(row) for row in rows], next_cursor=next_cursor
    )


@router.get(
    "/{meter_id}",
    summary="One meter, its last reading and open alerts",
    response_model=MeterDetail,
    **scoped(READINGS_READ, responses={404: {"description": "no such meter"}}),
)
async def meter_detail(request: Request, meter_id: Annotated[str, MeterIdPath]) -> MeterDetail:
    key = meter_key(meter_id)
    async with database_of(request).connection() as conn:
        row = await _meter_row(conn, key)
        cur = await conn.execute(_LAST_READING, {"meter": key})
        last = await cur.fetchone()
        cur = await conn.execute(_OPEN_ALERTS, (key,))
        alerts = await cur.fetchall()
    return MeterDetail(
        **row,
        last_reading=None
        if last is None
        else LastReading(
            measured_at=last["measured_at"],
            value=str(last["value"]),
            unit=last["unit"],
            source=last["source"],
        ),
        open_alerts=[Alert.model_validate(alert) for alert in alerts],
    )


@router.get(
    "/{meter_id}/readings",
    summary="A meter's readings in a time range",
    response_model=ReadingPage,
    **scoped(READINGS_READ, responses={404: {"description": "no such meter"}}),
)
async def meter_readings(
    request: Request,
    *,
    meter_id: Annotated[str, MeterIdPath],
    from_: Annotated[
        datetime | None, Query(alias="from", description="inclusive; default: 'to' - 7 days")
    ] = None,
    to: Annotated[datetime | None, Query(description="exclusive; default: now")] = None,
    quantity: Annotated[str | None, Query(max_length=64, description="e.g. volume")] = None,
    cursor: Annotated[str | None, cursor_query()] = None,
    limit: Annotated[int, limit_query()] = 1000,
) -> Any:
    """Readings ordered by measured_at (then quantity and the register's storage, tariff,
    subunit and function), every value exact."""
    end = aware(to, ("query", "to")) or datetime.now(UTC)
    start = aware(from_, ("query", "from")) or end - timedelta(days=7)
    if start >= end:
        raise bad_input("'from' must be before 'to'", ("query", "from"))
    params: dict[str, Any] = {
        "meter": meter_key(meter_id),
        "from": start,
        "to": end,
        "quantity": quantity,
        "limit": limit + 1,
        "after_at": None,
        "after_quantity": None,
        "after_storage": None,
        "after_tariff": None,
        "after_subunit": None,
        "after_function": None,
    }
    if cursor is not None:
        values = decode_cursor(cursor, datetime, str, int, int, int, str)
        for name, value in zip(
            ("at", "quantity", "storage", "tariff", "subunit", "function"), values, strict=True
        ):
            params[f"after_{name}"] = value
    async with database_of(request).connection() as conn:
        cur = await conn.execute(_READINGS, params)
        rows = await cur.fetchall()
        if not rows:
            await _meter_row(conn, params["meter"])  # no readings: is there such a meter?
    rows, next_cursor = page_of(
        rows,
        limit,
        lambda last: encode_cursor(
            last["measured_at"].isoformat(),
            last["quantity"],
            last["storage"],
            last["tariff"],
            last["subunit"],
            last["function"],
        ),
    )
    for row in rows:
        row["value"] = str(row["value"])
    # Plain data: FastAPI validates it against ReadingPage once, on the way out.
    return {"meter_id": params["meter"], "items": rows, "next_cursor": next_cursor}


def _today(settings: Settings) -> date:
    return datetime.now(settings.zone).date()


def _default_range(size: consumption.BucketSize, today: date) -> tuple[date, date]:
    end = today + timedelta(days=1)
    if size == "hour":
        return end - timedelta(days=2), end
    if size == "day":
        return end - timedelta(days=31), end
    return shift_periods(today, -11), end


@router.get(
    "/{meter_id}/consumption",
    summary="Consumption per local hour, day or month",
    response_model=ConsumptionSeries,
    **scoped(READINGS_READ, responses={404: {"description": "no such meter"}}),
)
async def meter_consumption(
    request: Request,
    *,
    meter_id: Annotated[str, MeterIdPath],
    bucket: Annotated[consumption.BucketSize, Query()] = "day",
    from_: Annotated[
        date | None,
        Query(alias="from", description="first local day (inclusive); default: a recent range"),
    ] = None,
    to: Annotated[date | None, Query(description="last local day (exclusive)")] = None,
) -> ConsumptionSeries:
    """Buckets in the utility's local time (the `zone` of the answer), correct across the DST
    changes: the local days of the changes last 23 and 25 hours. Month buckets widen the range
    to whole months."""
    settings = settings_of(request)
    default_first, default_last = _default_range(bucket, _today(settings))
    first, last = from_ or default_first, to or default_last
    if to is not None and from_ is None:
        first = last - (default_last - default_first)
    first, last = consumption.aligned_range(first, last, bucket)
    try:
        edges = consumption.bucket_edges(first, last, bucket, settings.zone)
    except ValueError as exc:
        raise bad_input(str(exc), ("query", "from")) from None
    key = meter_key(meter_id)
    async with database_of(request).connection() as conn:
        await _meter_row(conn, key)
        cur = await conn.execute(_EDGES, {"meter": key, "edges": edges})
        rows = await cur.fetchall()
    indices = []
    values: list[Decimal] = []
    unit = None
    for row in rows:
        before = _reading(row["b_at"], row["b_value"])
        after = _reading(row["a_at"], row["a_value"])
        values.extend(r.value for r in (before, after) if r is not None)
        unit = unit or row["b_unit"] or row["a_unit"]
        indices.append(consumption.index_at(row["edge"], before, after))
    exponent = quantum_of(*values) if values else 0
    series = consumption.buckets(edges, indices, exponent, settings.zone)
    return ConsumptionSeries(
        meter_id=key,
        bucket=bucket,
        zone=settings.zone.key,
        unit=unit,
        buckets=[
            Bucket(
                start=b.start,
                end=b.end,
                consumption=None if b.consumption is None else str(b.consumption),
            )
            for b in series
        ],
    )


def _reading(at: datetime | None, value: Decimal | None) -> IndexReading | None:
    if at is None or value is None:
        return None
    return IndexReading(at, value)
