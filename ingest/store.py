"""Writing batches of MQTT messages into PostgreSQL (DESIGN.md sections 4 and 9).

One batch is one transaction: its readings are copied (COPY, binary) into a session-local
staging table and moved into `readings` with INSERT ... SELECT, idempotent through ON CONFLICT
DO NOTHING, so that a redelivered message stores nothing twice; meter status reports the same
way; raw frames, dead letters and newly heard meters with idempotent inserts of their own. The
rows go in key order, so two workers writing overlapping batches take their row locks in the
same order and cannot deadlock each other. Values are Decimal in, numeric stored: exact.

ON CONFLICT costs (a speculative insertion per row: about 1.4 times a plain insert here). Values
of the moment (storage 0) conflict rarely: in runs, after a crash or an outage, when the broker
redelivers. So they are first written with a plain INSERT; a unique violation rolls the
transaction back and the batch is written again with ON CONFLICT DO NOTHING, as the following
batches are too until one of them meets no repeated value of the moment. Stored registers
(storage 1 and up, such as last month's index) always go through ON CONFLICT: a meter repeats
them in every telegram until the next one is due, so nearly every batch brings some that the
table has.

Failures are sorted for the worker: DatabaseUnavailable (connection lost, server restarting,
pool exhausted, deadlock) means "try the same batch again later"; BatchRejected means the
database refused the data itself (a constraint the payload validation did not know about), so
retrying cannot help and the worker isolates the message that causes it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from ingest.engine_marks import ON_MARKED
from ingest.payload import RawMessage, ReadingMessage
from metergate.errors import StorageError

log = logging.getLogger(__name__)

READING_COLUMNS = (
    "meter_id, quantity, storage, tariff, subunit, function, measured_at,"
    " value, unit, received_at, gateway_id, source, msg_id"
)
READING_TYPES = (
    "text", "text", "int8", "int4", "int4", "text", "timestamptz",
    "numeric", "text", "timestamptz", "text", "text", "text",
)  # fmt: skip
_STATUS_COLUMNS = "msg_id, meter_id, reported_at, flags, raw, gateway_id"
_STATUS_TYPES = ("text", "text", "timestamptz", "text[]", "int8", "text")

# Created once per connection; ON COMMIT DELETE ROWS empties them at the end of each batch.
_STAGING = """
CREATE TEMP TABLE ingest_readings_staging (
    meter_id text, quantity text, storage bigint, tariff integer, subunit integer,
    function text, measured_at timestamptz, value numeric, unit text, received_at timestamptz,
    gateway_id text, source text, msg_id text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE ingest_status_staging (
    msg_id text, meter_id text, reported_at timestamptz, flags text[], raw bigint,
    gateway_id text
) ON COMMIT DELETE ROWS;
"""

# Key order, so that concurrent writers take their row locks in one order (any total order
# serves; "C" is the cheapest to sort by).
_READINGS_ORDER = (
    'meter_id COLLATE "C", quantity COLLATE "C", storage, tariff, subunit, function COLLATE "C",'
    " measured_at"
)
# Readings and status reports move in one statement that also marks their meters for the
# engines (migrations/0009_engine_marks.sql), from the rows actually inserted: a month-end
# register that a meter repeats in every telegram conflicts with the stored one and marks
# nothing, where marking it would send every engine run back to that month. One statement takes
# the marks' row locks in one order (meter id), so two workers cannot deadlock on them.
_MOVE = f"""
WITH moved AS (
    INSERT INTO readings ({READING_COLUMNS})
    SELECT {READING_COLUMNS} FROM ingest_readings_staging WHERE storage = 0
    ORDER BY {_READINGS_ORDER}
    {{conflict}}
    RETURNING meter_id, measured_at
), registered AS (
    INSERT INTO readings ({READING_COLUMNS})
    SELECT {READING_COLUMNS} FROM ingest_readings_staging WHERE storage > 0
    ORDER BY {_READINGS_ORDER}
    ON CONFLICT DO NOTHING
    RETURNING meter_id, measured_at
), reported AS (
    INSERT INTO meter_status ({_STATUS_COLUMNS})
    SELECT {_STATUS_COLUMNS} FROM ingest_status_staging ORDER BY msg_id COLLATE "C"
    {{conflict}}
    RETURNING meter_id, reported_at
), changed AS (
    SELECT meter_id, min(at) AS since
    FROM (SELECT * FROM moved UNION ALL SELECT * FROM registered UNION ALL SELECT * FROM reported)
        AS new_rows (meter_id, at)
    GROUP BY meter_id
), marked AS (
    INSERT INTO engine_marks (meter_id, since)
    SELECT meter_id, since FROM changed ORDER BY meter_id COLLATE "C"
    {ON_MARKED}
)
SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM registered),
    (SELECT count(*) FROM reported)
"""
_IDEMPOTENT = "ON CONFLICT DO NOTHING"

# Sent with the moves as one multi-statement query (one round trip), so the arrays are literals.
_INSERT_METERS = """
INSERT INTO meters (meter_id, manufacturer, medium, status)
SELECT meter_id, manufacturer, medium, 'unregistered'
FROM unnest({}::text[], {}::text[], {}::text[]) AS heard (meter_id, manufacturer, medium)
ORDER BY meter_id COLLATE "C"
ON CONFLICT DO NOTHING
"""

_INSERT_RAW_FRAME = """
INSERT INTO raw_frames (msg_id, gateway_id, seq, meter_id, protocol, frame, error_type,
                        error_message, error_offset, received_at, rssi_dbm, location)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (msg_id) DO NOTHING
"""

_INSERT_DEAD_LETTER = """
INSERT INTO dead_letters (topic, payload, error, received_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (topic, payload_sha256) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the ingest could not accept, kept with the reason."""

    topic: str
    payload: bytes
    error: str
    received_at: datetime


Item = ReadingMessage | RawMessage | DeadLetter


@dataclass(frozen=True, slots=True)
class BatchCounts:
    """What one write stored. `duplicate_*` were already there (a redelivery)."""

    readings: int = 0
    duplicate_readings: int = 0
    status_reports: int = 0
    raw_frames: int = 0
    duplicate_raw_frames: int = 0
    dead_letters: int = 0
    new_meters: int = 0

    def __add__(self, other: BatchCounts) -> BatchCounts:
        return BatchCounts(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(BatchCounts))
        )


class DatabaseUnavailable(StorageError):  # noqa: N818 - a state, as DESIGN.md names errors
    """The batch was not written for a reason that passes (connection, restart, deadlock)."""

    retryable = True


class BatchRejected(StorageError):  # noqa: N818
    """The database refused the batch's data; writing the same rows again fails the same way."""

    retryable = False


def _text(value: str) -> str:
    """PostgreSQL text cannot hold NUL; topics and error texts come from outside."""
    return value.replace("\x00", "\ufffd")


class Store:
    """A connection pool and the batch write. Opens without waiting for the database."""

    def __init__(
        self,
        conninfo: str,
        *,
        max_connections: int = 2,
        timeout_s: float = 5.0,
        application_name: str = "metergate-ingest",
    ) -> None:
        self._timeout_s = timeout_s
        self._expect_duplicates = False
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_connections,
            open=False,
            name="ingest",
            configure=_create_staging,
            # Keepalives notice a server that vanished without closing the connection.
            kwargs={
                "application_name": application_name,
                "connect_timeout": max(1, round(timeout_s)),
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
            },
            reconnect_timeout=3600.0,
        )
        self._pool.open(wait=False)

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._pool.close()

    def _write(self, items: Sequence[Item], *, optimistic: bool) -> tuple[BatchCounts, bool]:
        if optimistic:
            try:
                with self._pool.connection(timeout=self._timeout_s) as conn, conn.transaction():
                    return _write(conn, items, optimistic=True)
            except psycopg.errors.UniqueViolation:
                log.info("redelivered messages: the batch is written again, idempotently")
        with self._pool.connection(timeout=self._timeout_s) as conn, conn.transaction():
            return _write(conn, items, optimistic=False)

    def write(self, items: Sequence[Item]) -> BatchCounts:
        """Store a batch in one transaction; the counts of what was new."""
        try:
            counts, redelivered = self._write(items, optimistic=not self._expect_duplicates)
        except PoolTimeout as exc:
            raise DatabaseUnavailable(f"no database connection: {exc}") from exc
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise BatchRejected(f"the database refused the batch: {_first_line(exc)}") from exc
        except psycopg.Error as exc:
            # Connection and server states, deadlocks, and also schema problems (a missing
            # table): none of them is the data's fault, so the batch waits rather than being
            # dead-lettered.
            raise DatabaseUnavailable(f"database error: {_first_line(exc)}") from exc
        self._expect_duplicates = redelivered
        return counts


def _first_line(exc: BaseException) -> str:
    # The first line is PostgreSQL's message; DETAIL may quote a failing row's values.
    return str(exc).split("\n", 1)[0]


def _create_staging(conn: psycopg.Connection[Any]) -> None:
    conn.execute(_STAGING.encode())
    conn.commit()


def reading_rows(message: ReadingMessage) -> list[tuple[object, ...]]:
    """The `readings` rows of a message, in the order of READING_COLUMNS."""
    tail = (message.received_at, message.gateway_id, message.protocol, message.msg_id)
    return [
        (message.meter_id, v.quantity, v.storage, v.tariff, v.subunit, v.function,
         v.measured_at, v.value, v.unit, *tail)
        for v in message.readings
    ]  # fmt: skip


def _raw_frame_row(message: RawMessage) -> tuple[object, ...]:
    location = None if message.location is None else json.dumps(message.location)
    error = message.error
    return (
        message.msg_id, message.gateway_id, message.seq, message.meter_id, message.protocol,
        message.frame, error.type, error.message, error.offset, message.received_at,
        message.rssi_dbm, location,
    )  # fmt: skip


def _write(
    conn: psycopg.Connection[Any], items: Sequence[Item], *, optimistic: bool
) -> tuple[BatchCounts, bool]:
    """The counts of a batch, and whether it repeated rows that only a redelivery repeats (a
    value of the moment, a status report)."""
    readings: list[tuple[object, ...]] = []
    statuses: list[tuple[object, ...]] = []
    raw_frames: list[tuple[object, ...]] = []
    dead_letters: list[tuple[object, ...]] = []
    heard: dict[str, tuple[str | None, str | None]] = {}
    for item in items:
        if isinstance(item, ReadingMessage):
            heard.setdefault(item.meter_id, (item.manufacturer, item.medium))
            readings.extend(reading_rows(item))
            if item.status is not None:
                flags = list(item.status.flags)
                statuses.append(
                    (item.msg_id, item.meter_id, item.received_at, flags, item.status.raw,
                     item.gateway_id)
                )  # fmt: skip
        elif isinstance(item, RawMessage):
            if item.meter_id is not None:
                heard.setdefault(item.meter_id, (None, None))
            raw_frames.append(_raw_frame_row(item))
        else:
            dead_letters.append(
                (_text(item.topic), item.payload, _text(item.error), item.received_at)
            )

    # The staging tables are filled first; then meters and the move go in one multi-statement
    # query: round trips are what a batch costs most while other threads of the worker hold
    # the GIL.
    statements: list[sql.Composable] = []
    if heard:
        ids = sorted(heard)
        manufacturers = [heard[i][0] for i in ids]
        media = [heard[i][1] for i in ids]
        statements.append(
            sql.SQL(_INSERT_METERS).format(*map(sql.Literal, (ids, manufacturers, media)))
        )
    counts: dict[str, int] = {}
    redelivered = False
    with conn.cursor() as cur:
        if readings:
            copy_rows(cur, "ingest_readings_staging", READING_COLUMNS, READING_TYPES, readings)
        if statuses:
            copy_rows(cur, "ingest_status_staging", _STATUS_COLUMNS, _STATUS_TYPES, statuses)
        if readings or statuses:
            move = _MOVE.replace("{conflict}", "" if optimistic else _IDEMPOTENT)
            statements.append(sql.SQL(move))
        if statements:
            cur.execute(sql.SQL(";").join(statements))
            if heard:
                counts["new_meters"] = cur.rowcount
                cur.nextset()
            if readings or statuses:
                moved = cur.fetchone()
                assert moved is not None
                now, registers, reports = moved
                counts["readings"], counts["status_reports"] = now + registers, reports
                values_of_the_moment = sum(row[2] == 0 for row in readings)  # storage 0
                redelivered = now < values_of_the_moment or reports < len(statuses)
        if readings:
            counts["duplicate_readings"] = len(readings) - counts["readings"]
        if raw_frames:
            cur.executemany(_INSERT_RAW_FRAME, raw_frames)
            counts["raw_frames"] = cur.rowcount
            counts["duplicate_raw_frames"] = len(raw_frames) - cur.rowcount
        if dead_letters:
            cur.executemany(_INSERT_DEAD_LETTER, dead_letters)
            counts["dead_letters"] = cur.rowcount
    return BatchCounts(**counts), redelivered


def copy_rows(
    cur: psycopg.Cursor[Any],
    table: str,
    columns: str,
    types: Sequence[str],
    rows: Sequence[tuple[object, ...]],
) -> None:
    """Binary COPY of `rows` (values of `types`) into `columns` of `table`."""
    with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)".encode()) as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)
