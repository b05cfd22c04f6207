"""Meter keys in the database, and the frames stored before a key was known, decoded again.

A frame the gateway could not decrypt reaches the ingest as raw/1 and waits in `raw_frames`
(DESIGN.md sections 4 and 9). When the meter's key is added, `add_key` stores it and decodes the
meter's waiting frames the way the gateway would have with the key: the gateway's own decoding
(gateway/pipeline.py decode_with_keys) and payload (gateway/messages.py reading_message), the
worker's validation (ingest/payload.py) and its idempotent batch write (ingest/store.py). A frame
that now decodes keeps its row, marked with `decoded_at`; one that still fails stays as it was.

The frames are decoded in the order they were received, because a compact frame can only be
expanded with a format learned from a full frame of the same model; compact frames that came
before the first full frame are tried once more at the end. Readings are written in that order
too, and of two frames giving a value for the same key (meter, quantity, ..., instant) the
first received wins, as it does when the worker stores them one by one.

Key bytes go to the database as bound parameters and nowhere else: no message, log line or
result here carries them (ingest/migrations/0005_meter_keys.sql says what else that takes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any

import psycopg

from decoders.decode import Decoder
from gateway.frames import RawFrame
from gateway.messages import DEFAULT_ZONE, reading_message, topic
from gateway.pipeline import decode_with_keys
from ingest.payload import InvalidMessage, ReadingMessage, parse_message
from ingest.store import DatabaseUnavailable, Store, _first_line, reading_rows
from metergate.errors import DecodeError, StorageError, UnsupportedError
from metergate.keys import KEY_SIZE, canonical_meter_id

BATCH_MAX = 1_000

STORE_KEY = """
INSERT INTO meter_keys (meter_id, key) VALUES (%s, %s)
ON CONFLICT (meter_id) DO UPDATE SET key = EXCLUDED.key, added_at = now()
"""

_WAITING_FRAMES = """
SELECT id, msg_id, gateway_id, seq, protocol, frame, received_at, rssi_dbm, location
FROM raw_frames WHERE meter_id = %s AND decoded_at IS NULL {}
ORDER BY received_at, id
"""
_UNTRIED = "AND tried_at IS NULL"

_MARK_DECODED = "UPDATE raw_frames SET decoded_at = now() WHERE id = ANY(%s) AND decoded_at IS NULL"
_MARK_TRIED = """
UPDATE raw_frames AS r SET tried_at = now(), tried_error = failed.error
FROM unnest(%s::bigint[], %s::text[]) AS failed (id, error)
WHERE r.id = failed.id AND r.decoded_at IS NULL
"""


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What may be shown of a stored key: whose it is and since when."""

    meter_id: str
    added_at: datetime


@dataclass(frozen=True, slots=True)
class Failure:
    """A stored frame that still does not decode, and why (the decoder's words: no key bytes)."""

    frame_id: int
    error_type: str
    message: str


@dataclass(frozen=True, slots=True)
class Recovery:
    """What decoding a meter's stored frames again did. `stored` counts the frames that were
    waiting; `decoded` those now turned into readings (`readings` rows new to the table)."""

    meter_id: str
    stored: int
    decoded: int
    readings: int
    failures: tuple[Failure, ...]


@dataclass(frozen=True, slots=True)
class _Decoded:
    frame_id: int
    message: ReadingMessage


def check_key(meter_id: str, key: bytes) -> str:
    """The canonical meter id; ValueError (naming neither key nor its text) when either is not
    one a key can be stored for."""
    canonical = canonical_meter_id(meter_id)
    if canonical is None:
        raise ValueError("a key belongs to a meter id of the form MFR-12345678")
    if len(key) != KEY_SIZE:
        raise ValueError(f"an AES-128 key is {KEY_SIZE} bytes")
    return canonical


def store_key(conn: psycopg.Connection[Any], meter_id: str, key: bytes) -> str:
    """Store or replace a meter's key (in the caller's transaction); its canonical meter id."""
    meter = check_key(meter_id, key)
    conn.execute(STORE_KEY, (meter, key))
    return meter


def list_keys(conn: psycopg.Connection[Any]) -> list[StoredKey]:
    rows = conn.execute("SELECT meter_id, added_at FROM meter_keys ORDER BY meter_id").fetchall()
    return [StoredKey(str(meter_id), added_at) for meter_id, added_at in rows]


def remove_key(conn: psycopg.Connection[Any], meter_id: str) -> bool:
    """Forget a meter's key; False when it had none. Readings decoded with it stay."""
    cur = conn.execute("DELETE FROM meter_keys WHERE meter_id = %s", (meter_id,))
    return cur.rowcount > 0


def add_key(
    conninfo: str,
    meter_id: str,
    key: bytes,
    *,
    zone: tzinfo = DEFAULT_ZONE,
    decoder: Decoder | None = None,
) -> Recovery:
    """Store the key, then decode the meter's stored frames with it (`recover_frames`)."""
    meter = check_key(meter_id, key)
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            store_key(conn, meter, key)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"database unavailable: {_first_line(exc)}") from None
    except psycopg.Error as exc:
        raise StorageError(f"the key was not stored: {_first_line(exc)}") from None
    return recover_frames(conninfo, meter, key, zone=zone, decoder=decoder)


def recover_frames(
    conninfo: str,
    meter_id: str,
    key: bytes,
    *,
    zone: tzinfo = DEFAULT_ZONE,
    decoder: Decoder | None = None,
) -> Recovery:
    """Decode the meter's waiting raw frames with `key`, store their readings and mark them
    (`recover_with` on connections of its own).

    Running it again is harmless: marked frames are not read again, and the writes are
    idempotent, so a run cut short leaves nothing that the next one does not finish.
    """
    meter = check_key(meter_id, key)
    try:
        with (
            psycopg.connect(conninfo, autocommit=True) as conn,
            Store(conninfo, max_connections=1, application_name="metergate-keys") as store,
        ):
            return recover_with(conn, store, meter, key, zone=zone, decoder=decoder)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"database unavailable: {_first_line(exc)}") from None


def recover_with(
    conn: psycopg.Connection[Any],
    store: Store,
    meter_id: str,
    key: bytes,
    *,
    zone: tzinfo = DEFAULT_ZONE,
    decoder: Decoder | None = None,
    untried_only: bool = False,
) -> Recovery:
    """`recover_frames` on the caller's connection (in autocommit) and store, as the engine
    thread decodes meter after meter; with `untried_only`, the frames it has not tried yet
    (ingest/engine_marks.py), and those that still fail are marked tried."""
    meter = check_key(meter_id, key)
    if decoder is None:
        from metergate.profiles import load_profiles

        decoder = Decoder(load_profiles())
    try:
        waiting = _WAITING_FRAMES.format(_UNTRIED if untried_only else "")
        rows = conn.execute(waiting.encode(), (meter,)).fetchall()
        decoded, failures = _decode_all(decoder, meter, key, rows, zone)
        readings = 0
        messages = _first_received(decoded)
        for start in range(0, len(decoded), BATCH_MAX):
            batch = decoded[start : start + BATCH_MAX]
            readings += store.write(messages[start : start + BATCH_MAX]).readings
            conn.execute(_MARK_DECODED, ([d.frame_id for d in batch],))
        if untried_only and failures:
            ids, errors = [f.frame_id for f in failures], [f.error_type for f in failures]
            conn.execute(_MARK_TRIED, (ids, errors))
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"database unavailable: {_first_line(exc)}") from None
    except psycopg.Error as exc:
        raise StorageError(f"stored frames not decoded again: {_first_line(exc)}") from None
    return Recovery(meter, len(rows), len(decoded), readings, tuple(failures))


def _decode_all(
    decoder: Decoder, meter_id: str, key: bytes, rows: list[tuple[Any, ...]], zone: tzinfo
) -> tuple[list[_Decoded], list[Failure]]:
    keys = {meter_id: key}
    learned = len(decoder.compact_formats)
    results = [_decode_frame(decoder, keys, row, zone) for row in rows]
    if len(decoder.compact_formats) > learned:
        # Formats learned from full frames that came after some compact ones.
        for position, result in enumerate(results):
            if isinstance(result, Failure) and result.error_type == UnsupportedError.__name__:
                results[position] = _decode_frame(decoder, keys, rows[position], zone)
    decoded = [result for result in results if isinstance(result, _Decoded)]
    return decoded, [result for result in results if isinstance(result, Failure)]


def _decode_frame(
    decoder: Decoder, keys: dict[str, bytes], row: tuple[Any, ...], zone: tzinfo
) -> _Decoded | Failure:
    frame_id, msg_id, gateway_id, seq, protocol, frame, received_at, rssi_dbm, location = row
    if protocol is None:
        return Failure(frame_id, "UnsupportedError", "the frame's protocol is not known")
    raw = RawFrame(
        bytes(frame),
        received_at,
        source=gateway_id,
        protocol=protocol,
        rssi_dbm=None if rssi_dbm is None else Decimal(rssi_dbm),
    )
    try:
        telegram = decode_with_keys(decoder, raw.data, keys, protocol=protocol)
        payload = reading_message(telegram, raw, gateway_id, zone=zone)
    except DecodeError as error:
        return Failure(frame_id, type(error).__name__, error.message)
    # The numbering and the position of the raw/1 message that brought the frame.
    payload.update(seq=seq, msg_id=msg_id, location=location)
    try:
        message = parse_message(
            topic(gateway_id, payload["meter_id"], "reading"), json.dumps(payload).encode()
        )
    except InvalidMessage as error:
        return Failure(frame_id, "InvalidMessage", error.message)
    assert isinstance(message, ReadingMessage)
    return _Decoded(frame_id, message)


def _first_received(decoded: list[_Decoded]) -> list[ReadingMessage]:
    """The messages without the values whose readings key an earlier frame gave already: one
    INSERT of both would keep either, not the first received."""
    seen: set[tuple[object, ...]] = set()
    out: list[ReadingMessage] = []
    for item in decoded:
        message = item.message
        keys = [row[:7] for row in reading_rows(message)]
        kept = tuple(
            value for value, key in zip(message.readings, keys, strict=True) if key not in seen
        )
        seen.update(keys)
        out.append(message.model_copy(update={"readings": kept}))
    return out
