"""Rows for the API's tests, written with SQL into the tables the ingest owns."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from ingest.boundaries import month_boundary

Conn = psycopg.Connection[Any]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def meter(conn: Conn, meter_id: str, **fields: Any) -> None:
    values: dict[str, Any] = {
        "manufacturer": meter_id.split("-", maxsplit=1)[0],
        "serial": meter_id.rsplit("-", maxsplit=1)[-1],
        "medium": "water",
        "kind": "mechanical",
        "country": "LV",
        "premise": "P-1",
        "address": "Brivibas iela 1, Riga",
        "customer_ref": "C-1",
        "contract_ref": "K-1",
        "installed_on": date(2020, 1, 1),
        "status": "active",
        **fields,
    }
    columns = ["meter_id", *values]
    conn.execute(
        psycopg.sql.SQL("INSERT INTO meters ({}) VALUES ({})").format(
            psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, columns)),
            psycopg.sql.SQL(", ").join(psycopg.sql.Placeholder() * len(columns)),
        ),
        [meter_id, *values.values()],
    )


def readings(
    conn: Conn,
    meter_id: str,
    points: Iterable[tuple[datetime, Decimal | str]],
    *,
    source: str = "wmbus",
    quantity: str = "volume",
) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (meter_id, quantity, storage, tariff, subunit, function,"
            " measured_at, value, unit, received_at, gateway_id, source)"
            " VALUES (%s, %s, 0, 0, 0, 'instantaneous', %s, %s, 'm3', %s, 'gw-1', %s)",
            [(meter_id, quantity, at, Decimal(v), at, source) for at, v in points],
        )


def hourly(
    conn: Conn, meter_id: str, first: datetime, last: datetime, *, start: str, per_hour: str
) -> None:
    """A reading at every UTC hour from `first` to `last`, rising `per_hour` each hour."""
    points = []
    at, value = first, Decimal(start)
    while at <= last:
        points.append((at, value))
        at += timedelta(hours=1)
        value += Decimal(per_hour)
    readings(conn, meter_id, points)


def monthly(
    conn: Conn,
    meter_id: str,
    period: date,
    value: str,
    method: str = "actual",
    *,
    revision: int = 1,
    zone: Any = None,
) -> None:
    """Write revision `revision` of a monthly reading (an INSERT, then UPDATEs as the ingest
    makes revisions, so the history triggers run)."""
    boundary = month_boundary(period) if zone is None else month_boundary(period, zone)
    evidence = json.dumps({"readings": [], "rates": []})
    if revision == 1:
        conn.execute(
            "INSERT INTO monthly_readings (meter_id, period, boundary, value, unit, method,"
            " evidence) VALUES (%s, %s, %s, %s, 'm3', %s, %s)",
            (meter_id, period, boundary, Decimal(value), method, evidence),
        )
    else:
        conn.execute(
            "UPDATE monthly_readings SET value = %s, method = %s, revision = %s,"
            " computed_at = now() WHERE meter_id = %s AND period = %s",
            (Decimal(value), method, revision, meter_id, period),
        )


def alert(
    conn: Conn,
    meter_id: str,
    kind: str,
    opened_at: datetime,
    closed_at: datetime | None = None,
    *,
    rule: str = "meter_flag",
) -> int:
    row = conn.execute(
        "INSERT INTO alerts (meter_id, kind, rule, opened_at, closed_at, evidence)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (meter_id, kind, rule, opened_at, closed_at, json.dumps({"rule": rule})),
    ).fetchone()
    assert row is not None
    return int(row[0])


def replacement(conn: Conn, at: datetime, old: tuple[str, str], new: tuple[str, str]) -> None:
    """A replacement at `at`: `old` is (meter, final index), `new` (meter, start index)."""
    (old_meter, old_final), (new_meter, new_start) = old, new
    conn.execute(
        "INSERT INTO meter_replacements (replaced_at, old_meter_id, old_final, new_meter_id,"
        " new_start) VALUES (%s, %s, %s, %s, %s)",
        (at, old_meter, Decimal(old_final), new_meter, Decimal(new_start)),
    )
