"""GET /v1/alerts and GET /v1/verification/due: what operations look at every morning."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.auth import READINGS_READ, ScopedRoute, scoped
from api.db import database_of, settings_of
from api.models import Alert, AlertPage, VerificationDue, VerificationPage
from api.params import cursor_query, decode_cursor, encode_cursor, limit_query, meter_key, page_of
from ingest.alerts import AlertKind

router = APIRouter(tags=["operations"], route_class=ScopedRoute)


_ALERTS = """
SELECT id, meter_id, kind, rule, opened_at, closed_at, evidence FROM alerts
WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)
  AND (%(open)s::boolean IS NULL OR (closed_at IS NULL) = %(open)s)
  AND (%(meter)s::text IS NULL OR meter_id = %(meter)s)
  AND (%(before)s::bigint IS NULL OR id < %(before)s)
ORDER BY id DESC
LIMIT %(limit)s
"""

_DUE = """
SELECT meter_id, serial, premise, address, medium, kind, verified_on, next_verification_due
FROM meters
WHERE status = 'active' AND next_verification_due <= %(due_by)s
  AND (%(after_due)s::date IS NULL
       OR (next_verification_due, meter_id) > (%(after_due)s, %(after_meter)s))
ORDER BY next_verification_due, meter_id
LIMIT %(limit)s
"""


@router.get("/v1/alerts", summary="Alerts", response_model=AlertPage, **scoped(READINGS_READ))
async def list_alerts(
    request: Request,
    *,
    kind: Annotated[AlertKind | None, Query()] = None,
    open: Annotated[bool | None, Query(description="true: open only; false: closed only")] = None,
    meter_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    cursor: Annotated[str | None, cursor_query()] = None,
    limit: Annotated[int, limit_query()] = 100,
) -> AlertPage:
    """Newest first."""
    before = decode_cursor(cursor, int)[0] if cursor is not None else None
    params = {
        "kind": kind,
        "open": open,
        "meter": None if meter_id is None else meter_key(meter_id),
        "before": before,
        "limit": limit + 1,
    }
    async with database_of(request).connection() as conn:
        cur = await conn.execute(_ALERTS, params)
        rows = await cur.fetchall()
    rows, next_cursor = page_of(rows, limit, lambda last: encode_cursor(last["id"]))
    return AlertPage(items=[Alert.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/v1/verification/due",
    summary="Meters due for metrological verification",
    response_model=VerificationPage,
    **scoped(READINGS_READ),
)
async def verification_due(
    request: Request,
    *,
    within_days: Annotated[int, Query(ge=0, le=36500)] = 90,
    cursor: Annotated[str | None, cursor_query()] = None,
    limit: Annotated[int, limit_query()] = 1000,
) -> VerificationPage:
    """Active meters whose verification falls due within `within_days` of today (local), the
    overdue ones first, by due date."""
    today = datetime.now(settings_of(request).zone).date()
    after_due, after_meter = None, None
    if cursor is not None:
        after_due, after_meter = decode_cursor(cursor, date, str)
    params = {
        "due_by": today + timedelta(days=within_days),
        "after_due": after_due,
        "after_meter": after_meter,
        "limit": limit + 1,
    }
    async with database_of(request).connection() as conn:
        cur = await conn.execute(_DUE, params)
        rows = await cur.fetchall()
    rows, next_cursor = page_of(
        rows,
        limit,
        lambda last: encode_cursor(last["next_verification_due"].isoformat(), last["meter_id"]),
    )
    items = [
        VerificationDue(
            **row,
            days_left=(row["next_verification_due"] - today).days,
            overdue=row["next_verification_due"] < today,
        )
        for row in rows
    ]
    return VerificationPage(
        today=today, within_days=within_days, items=items, next_cursor=next_cursor
    )
