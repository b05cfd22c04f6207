"""The meter registry from a CSV file: parsing (pure) and the upsert, for the API's
POST /v1/meters/import and the `metergate meters import` command alike.

The file has a header row; columns are named as in the `meters` table (any order, any case),
comma- or semicolon-separated (spreadsheets with a decimal comma write semicolons):

    meter_id | serial + manufacturer      the identity: KAM-12345678, or its two halves
    premise, address                       at least one of them
    customer_ref, contract_ref, medium, kind, model, meter_class, q3_m3h, country
    installed_on, removed_on               YYYY-MM-DD
    verified_on (last verification, YYYY-MM-DD) or marking_year (YYYY)
    verification_interval_years            overrides the rules table

A row that cannot be used is reported with its line number and the others are loaded. A column
the file does not have is left as it is in the registry; a column it has is written, an empty
cell as null. The next verification due date is derived by ingest.verification (the rule of
country, medium and kind, counted as that country counts).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg

from ingest.engine_marks import ON_MARKED
from ingest.engine_sql import index_series
from ingest.verification import VerificationRule, find_rule, next_due
from metergate.keys import canonical_meter_id

TEXT_COLUMNS = (
    "serial",
    "manufacturer",
    "medium",
    "kind",
    "model",
    "meter_class",
    "country",
    "premise",
    "address",
    "customer_ref",
    "contract_ref",
)
DATE_COLUMNS = ("installed_on", "removed_on", "verified_on")
COLUMNS = frozenset(
    {"meter_id", *TEXT_COLUMNS, *DATE_COLUMNS, "q3_m3h", "marking_year",
     "verification_interval_years"}
)  # fmt: skip
MAX_TEXT = 200
_OTHER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", re.ASCII)
_SERIAL = re.compile(r"\d{8}", re.ASCII)
_MANUFACTURER = re.compile(r"[A-Za-z]{3}", re.ASCII)
_COUNTRY = re.compile(r"[A-Z]{2}", re.ASCII)


class MeterFileError(ValueError):
    """The file as a whole cannot be read (no header, unknown columns, no identity column)."""


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    message: str


@dataclass(frozen=True, slots=True)
class MeterRow:
    line: int
    meter_id: str
    serial: str | None = None
    manufacturer: str | None = None
    medium: str | None = None
    kind: str | None = None
    model: str | None = None
    meter_class: str | None = None
    country: str | None = None
    premise: str | None = None
    address: str | None = None
    customer_ref: str | None = None
    contract_ref: str | None = None
    installed_on: date | None = None
    removed_on: date | None = None
    verified_on: date | None = None
    q3_m3h: Decimal | None = None
    verification_interval_years: int | None = None
    next_verification_due: date | None = None


# Columns of `meters` the upsert writes, in MeterRow's order, and the file columns that give
# each one; a registry column is written when the file has any of them.
_WRITTEN = tuple(f.name for f in fields(MeterRow) if f.name not in ("line", "meter_id"))
_SOURCES: Mapping[str, tuple[str, ...]] = {
    **{name: (name,) for name in (*TEXT_COLUMNS, "installed_on", "removed_on", "q3_m3h")},
    "verified_on": ("verified_on", "marking_year"),
    "verification_interval_years": ("verification_interval_years", "verified_on",
                                    "marking_year", "country", "medium", "kind"),
    "next_verification_due": ("verification_interval_years", "verified_on", "marking_year",
                              "country", "medium", "kind"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class MeterFile:
    columns: frozenset[str]
    rows: tuple[MeterRow, ...]
    errors: tuple[RowError, ...]

    def written(self) -> dict[str, bool]:
        """For each registry column: whether this file writes it."""
        return {name: any(c in self.columns for c in _SOURCES[name]) for name in _WRITTEN}


def parse_meters_csv(text: str) -> MeterFile:
    """The rows and the row errors of a meters CSV file; MeterFileError when the file as a whole
    is unusable."""
    text = text.removeprefix("\ufeff")  # the byte order mark spreadsheets write
    lines = text.splitlines(keepends=True)
    if not lines or not lines[0].strip():
        raise MeterFileError("the file is empty; line 1 must be the header")
    delimiter = ";" if lines[0].count(";") > lines[0].count(",") else ","
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = [name.strip().lower() for name in next(reader)]
    except csv.Error as exc:
        raise MeterFileError(f"line 1: the header is not CSV ({exc})") from None
    unknown = [name for name in header if name not in COLUMNS]
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise MeterFileError(
            f"line 1: unknown column(s) {shown}; the columns are {', '.join(sorted(COLUMNS))}"
        )
    if len(set(header)) != len(header):
        raise MeterFileError("line 1: a column is named twice")
    if "meter_id" not in header and not {"serial", "manufacturer"} <= set(header):
        raise MeterFileError("line 1: a meter needs a meter_id column, or serial and manufacturer")
    if "premise" not in header and "address" not in header:
        raise MeterFileError("line 1: a meter needs a premise or an address column")
    rows: list[MeterRow] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    line = 2
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(RowError(line, f"not CSV: {exc}"))
            line = reader.line_num + 1
            continue
        if record and any(cell.strip() for cell in record):
            try:
                row = _row(line, header, record)
            except ValueError as exc:
                errors.append(RowError(line, str(exc)))
            else:
                if row.meter_id in seen:
                    errors.append(
                        RowError(line, f"{row.meter_id} is on line {seen[row.meter_id]} already")
                    )
                else:
                    seen[row.meter_id] = line
                    rows.append(row)
        line = reader.line_num + 1
    return MeterFile(frozenset(header), tuple(rows), tuple(errors))


def _row(line: int, header: Sequence[str], record: Sequence[str]) -> MeterRow:
    if len(record) != len(header):
        raise ValueError(f"{len(record)} cells; the header has {len(header)}")
    cells = {name: cell.strip() or None for name, cell in zip(header, record, strict=True)}
    for name, cell in cells.items():
        if cell is not None and len(cell) > MAX_TEXT:
            raise ValueError(f"{name}: longer than {MAX_TEXT} characters")
    values: dict[str, Any] = {name: cells.get(name) for name in TEXT_COLUMNS}
    values["meter_id"] = _identity(cells)
    for name in ("medium", "kind"):
        if values[name] is not None:
            values[name] = values[name].lower()
    if values["manufacturer"] is not None:
        values["manufacturer"] = values["manufacturer"].upper()
    country = values["country"]
    if country is not None:
        country = values["country"] = country.upper()
        if _COUNTRY.fullmatch(country) is None:
            raise ValueError("country: two letters (ISO 3166-1), e.g. LV")
    for name in DATE_COLUMNS:
        values[name] = _date(name, cells.get(name))
    installed, removed = values["installed_on"], values["removed_on"]
    if installed and removed and removed < installed:
        raise ValueError("removed_on is before installed_on")
    values["q3_m3h"] = _positive_decimal("q3_m3h", cells.get("q3_m3h"))
    marking_year = _integer("marking_year", cells.get("marking_year"), 1900, 2200)
    years = _integer("verification_interval_years", cells.get("verification_interval_years"), 1, 50)
    verified = values["verified_on"]
    if marking_year is not None and verified is None:
        # The marking gives a year only: its first day is the earliest the meter can date from.
        values["verified_on"] = date(marking_year, 1, 1)
    rule = None
    if country is not None and values["medium"] is not None:
        rule = find_rule(country, values["medium"], values["kind"])
    if years is not None:
        rule = VerificationRule(
            country or "", values["medium"] or "", values["kind"] or "*", years, "meters import"
        )
    if rule is not None and (verified is not None or marking_year is not None):
        due = next_due(rule, marking_year=marking_year, last_verified=verified)
        values["next_verification_due"] = due.due_on
    values["verification_interval_years"] = None if rule is None else rule.years
    return MeterRow(line=line, **values)


def _identity(cells: Mapping[str, str | None]) -> str:
    given = cells.get("meter_id")
    serial, manufacturer = cells.get("serial"), cells.get("manufacturer")
    if given is not None:
        canonical = canonical_meter_id(given)
        if canonical is not None:
            return canonical
        if _OTHER_ID.fullmatch(given) is None:
            raise ValueError("meter_id: letters, digits and . _ : - only (e.g. KAM-12345678)")
        return given
    if serial is None or manufacturer is None:
        raise ValueError("no meter_id, and no serial with manufacturer")
    if _SERIAL.fullmatch(serial) is None or _MANUFACTURER.fullmatch(manufacturer) is None:
        raise ValueError(
            "without a meter_id, serial must be the 8-digit identification number and"
            " manufacturer its three letters (e.g. KAM, 12345678)"
        )
    canonical = canonical_meter_id(f"{manufacturer}-{serial}")
    assert canonical is not None
    return canonical


def _date(name: str, text: str | None) -> date | None:
    if text is None:
        return None
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name}: a date is written YYYY-MM-DD, got {text[:20]!r}") from None


def _integer(name: str, text: str | None, low: int, high: int) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"{name}: a whole number from {low} to {high}, got {text[:20]!r}")
    return int(text)


def _positive_decimal(name: str, text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text.replace(",", "."))
    except InvalidOperation:
        value = Decimal(0)
    if not value.is_finite() or value <= 0:
        raise ValueError(f"{name}: a positive number, e.g. 2.5, got {text[:20]!r}")
    return value


_UNNEST_TYPES = {
    **dict.fromkeys(TEXT_COLUMNS, "text"),
    "installed_on": "date", "removed_on": "date", "verified_on": "date",
    "q3_m3h": "numeric", "verification_interval_years": "integer",
    "next_verification_due": "date",
}  # fmt: skip

# Constant text, composed once from the column names above; every value is a bound parameter.
# `registered`: the row is new, or was a meter the ingest had only heard ('unregistered'): the
# CTE reads the rows as they were before this statement.
_UPSERT = """
WITH before AS (SELECT meter_id, status FROM meters WHERE meter_id = ANY(%(meter_id)s::text[]))
INSERT INTO meters AS m (meter_id, {columns}, status)
SELECT i.meter_id, {selected},
       CASE WHEN i.removed_on <= current_date THEN 'removed' ELSE 'active' END
FROM unnest(%(meter_id)s::text[], {arrays}) AS i (meter_id, {columns})
ORDER BY i.meter_id
ON CONFLICT (meter_id) DO UPDATE SET {updates},
    status = CASE
        WHEN (CASE WHEN %(w_removed_on)s THEN EXCLUDED.removed_on ELSE m.removed_on END)
             <= current_date THEN 'removed' ELSE 'active' END,
    updated_at = now()
RETURNING m.meter_id, (xmax = 0) AS inserted, coalesce(
    (SELECT b.status = 'unregistered' FROM before AS b WHERE b.meter_id = m.meter_id), true
) AS registered
""".format(
    columns=", ".join(_WRITTEN),
    selected=", ".join(f"i.{name}" for name in _WRITTEN),
    arrays=", ".join(f"%({name})s::{_UNNEST_TYPES[name]}[]" for name in _WRITTEN),
    updates=", ".join(
        f"{name} = CASE WHEN %(w_{name})s THEN EXCLUDED.{name} ELSE m.{name} END"
        for name in _WRITTEN
    ),
)


# Newly registered meters, marked for the ingest's engines (ingest/engine_marks.py) from their
# installation, removal or first index reading, whichever is earliest: the engines skip a meter
# the ingest has only heard, so its history has not been computed. A registered meter whose
# dates change is not marked (a re-import of a whole fleet would send every meter's history
# through the engines): the sweep takes up verification, `monthly fill` the monthly readings.
_MARK_REGISTERED = f"""
INSERT INTO engine_marks (meter_id, since)
SELECT m.meter_id, least(
    m.installed_on::timestamptz, m.removed_on::timestamptz,
    (SELECT min(measured_at) FROM readings WHERE {index_series("m.meter_id")} AND storage = 0),
    now())
FROM meters AS m WHERE m.meter_id = ANY(%s)
ORDER BY m.meter_id COLLATE "C"
{ON_MARKED}
"""


def upsert_params(file: MeterFile) -> dict[str, Any]:
    params: dict[str, Any] = {"meter_id": [row.meter_id for row in file.rows]}
    for name in _WRITTEN:
        params[name] = [getattr(row, name) for row in file.rows]
    for name, written in file.written().items():
        params[f"w_{name}"] = written
    return params


def count_upserted(rows: Sequence[Sequence[Any]]) -> tuple[int, int]:
    """(inserted, updated) from the RETURNING rows of the upsert."""
    new = sum(1 for row in rows if row[1])
    return new, len(rows) - new


def newly_registered(rows: Sequence[Sequence[Any]]) -> list[str]:
    return [str(row[0]) for row in rows if row[2]]


def upsert_meters(conn: psycopg.Connection[Any], file: MeterFile) -> tuple[int, int]:
    """Write the file's good rows into `meters` and mark them for the engines (in the
    caller's transaction); (inserted, updated)."""
    if not file.rows:
        return 0, 0
    rows = conn.execute(_UPSERT, upsert_params(file)).fetchall()
    conn.execute(_MARK_REGISTERED, (newly_registered(rows),))
    return count_upserted(rows)


async def upsert_meters_async(
    conn: psycopg.AsyncConnection[Any], file: MeterFile
) -> tuple[int, int]:
    """upsert_meters on an async connection."""
    if not file.rows:
        return 0, 0
    cur = await conn.execute(_UPSERT, upsert_params(file))
    rows = [_values(row) for row in await cur.fetchall()]
    await conn.execute(_MARK_REGISTERED, (newly_registered(rows),))
    return count_upserted(rows)


def _values(row: Any) -> Sequence[Any]:
    """A row as a sequence, whatever the connection's row factory."""
    return tuple(row.values()) if isinstance(row, Mapping) else row
