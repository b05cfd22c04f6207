"""Parsing what requests carry: periods, meter ids, instants, page cursors. Bad input is a 422
whose message says what was expected, in words a person can act on."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from fastapi import HTTPException, Path, Query

from ingest.boundaries import parse_period
from metergate.keys import canonical_meter_id

Row = TypeVar("Row")

PERIOD_PATTERN = r"^(19|2[01])\d\d-(0[1-9]|1[0-2])$"
FIRST_YEAR, LAST_YEAR = 1900, 2199
MAX_LIMIT = 10_000

MeterIdPath = Path(
    min_length=1,
    max_length=64,
    description="the meter id, e.g. KAM-12345678 (manufacturer, identification number)",
)

PeriodPath = Path(
    description="the billing month, YYYY-MM", json_schema_extra={"pattern": PERIOD_PATTERN}
)


def period_query(description: str = "the billing month, YYYY-MM") -> Any:
    return Query(description=description, json_schema_extra={"pattern": PERIOD_PATTERN})


def limit_query(maximum: int = MAX_LIMIT) -> Any:
    return Query(ge=1, le=maximum, description=f"rows per page (at most {maximum})")


def cursor_query() -> Any:
    return Query(max_length=512, description="next_cursor of the previous page")


Location = tuple[str, ...]


def bad_input(message: str, loc: Location) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, so that every 422 of the API reads
    alike: `detail` is a list of {loc, msg, type}."""
    return HTTPException(
        status_code=422, detail=[{"loc": list(loc), "msg": message, "type": "value_error"}]
    )


def period_of_text(text: str, loc: Location) -> date:
    try:
        period = parse_period(text)
    except ValueError as exc:
        raise bad_input(str(exc), loc) from None
    if not FIRST_YEAR <= period.year <= LAST_YEAR:
        raise bad_input(f"a period between {FIRST_YEAR} and {LAST_YEAR}, got {text!r}", loc)
    return period


def meter_key(text: str) -> str:
    """The stored spelling of a meter id: canonical for MFR-ID ids, as given for others."""
    return canonical_meter_id(text) or text.strip()


def aware(instant: datetime | None, loc: Location) -> datetime | None:
    """`instant` in UTC; a time without its UTC offset is refused, since the zone would be a
    guess."""
    if instant is None:
        return None
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise bad_input(
            f"{loc[-1]} needs a UTC offset or Z, e.g. 2026-10-31T22:00:00Z; got"
            f" {instant.isoformat()}",
            loc,
        )
    return instant.astimezone(UTC)


def page_of(
    rows: list[Row], limit: int, cursor_of: Callable[[Row], str]
) -> tuple[list[Row], str | None]:
    """Keyset paging: the query asked for `limit + 1` rows, and the extra one says that a next
    page exists; its cursor is made from the last row shown."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, cursor_of(rows[-1])


def encode_cursor(*values: str | int | None) -> str:
    raw = json.dumps(list(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, *kinds: type) -> list[Any]:
    """The values of a cursor this API gave out, checked against `kinds` (str, int, date,
    datetime);
    anything else is a 422."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(kinds):
            raise ValueError
        out: list[Any] = []
        for value, kind in zip(values, kinds, strict=True):
            if kind is datetime:
                out.append(datetime.fromisoformat(value))
            elif kind is date:
                out.append(date.fromisoformat(value))
            elif isinstance(value, kind) and not isinstance(value, bool):
                out.append(value)
            else:
                raise ValueError
        return out
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise bad_input(
            "cursor is not one this API gave out; start again without it", ("query", "cursor")
        ) from None
