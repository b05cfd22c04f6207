"""Batch writes against the real PostgreSQL: exact, idempotent, atomic, sorted by failure."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from ingest.payload import Message, parse_message
from ingest.store import BatchCounts, BatchRejected, DatabaseUnavailable, DeadLetter, Store
from tests.ingest.messages import encode, raw, reading, rows_of
from tests.ingest.services import count, free_port

NOW = datetime(2026, 11, 1, 8, tzinfo=UTC)


def parsed(message: tuple[str, dict]) -> Message:
    return parse_message(*encode(message))


def stored_rows(url: str) -> set[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return set(
            conn.execute(
                "SELECT meter_id, quantity, storage, tariff, subunit, function, measured_at, value"
                " FROM readings"
            )
        )


@pytest.fixture
def store(db: str):
    with Store(db) as opened:
        yield opened


def test_a_batch_is_stored_exactly(db: str, store: Store) -> None:
    messages = [reading(seq, count=3) for seq in range(40)]
    counts = store.write([parsed(m) for m in messages])
    assert counts == BatchCounts(readings=120, status_reports=40, new_meters=40)
    assert stored_rows(db) == rows_of(messages)


@pytest.mark.parametrize(
    "value",
    ["123.4560", "0.000000001", "-5", "0", "12345678901234567890123456789.123456789012345678901",
     "9" * 62, "0." + "0" * 61 + "1"],
)  # fmt: skip
def test_values_keep_every_digit_and_their_scale(db: str, store: Store, value: str) -> None:
    topic, payload = reading(1, count=1)
    payload["readings"][0]["value"] = value
    store.write([parsed((topic, payload))])
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT value, value::text FROM readings").fetchone()
    assert row == (Decimal(value), value)


def test_a_redelivered_batch_stores_nothing_twice(db: str, store: Store) -> None:
    batch = [parsed(reading(seq)) for seq in range(10)]
    store.write(batch)
    again = store.write(batch)
    assert again == BatchCounts(duplicate_readings=20)
    assert count(db, "SELECT count(*) FROM readings") == 20
    assert count(db, "SELECT count(*) FROM meter_status") == 10


def test_a_batch_mixing_redelivered_and_new_messages_stores_the_new_ones(
    db: str, store: Store
) -> None:
    first = [reading(seq) for seq in range(10)]
    second = [reading(seq) for seq in range(10, 20)]
    third = [reading(seq) for seq in range(20, 30)]
    store.write([parsed(m) for m in first])
    mixed = store.write([parsed(m) for m in first[5:] + second])
    assert (mixed.readings, mixed.duplicate_readings, mixed.status_reports) == (20, 10, 10)
    # After duplicates the next batch goes the idempotent way at once; then the plain way.
    assert store.write([parsed(m) for m in third[:5]]).readings == 10
    assert store.write([parsed(m) for m in third[5:]]).readings == 10
    assert stored_rows(db) == rows_of(first + second + third)


def test_a_register_repeated_in_every_telegram_is_stored_once_without_a_second_try(
    db: str, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Last month's index comes with every telegram of the month: the table has it from the
    second telegram on, which must not cost the batch a rollback and a second write."""
    topic, first = reading(1, meter_id="KAM-00000001", count=2)
    _, later = reading(2, meter_id="KAM-00000001", count=2)
    later["readings"][1] = first["readings"][1]
    store.write([parsed((topic, first))])
    with caplog.at_level(logging.INFO, logger="ingest.store"):
        counts = store.write([parsed((topic, later))])
    assert (counts.readings, counts.duplicate_readings) == (1, 1)
    assert "written again" not in caplog.text
    assert count(db, "SELECT count(*) FROM readings WHERE storage = 1") == 1
    # Nor did it switch the store to writing idempotently: a redelivery now meets the plain
    # insert first (and is written again, idempotently).
    with caplog.at_level(logging.INFO, logger="ingest.store"):
        assert store.write([parsed((topic, first))]).duplicate_readings == 2
    assert caplog.text.count("written again") == 1


def test_the_same_message_twice_in_one_batch_is_stored_once(db: str, store: Store) -> None:
    message = parsed(reading(3))
    counts = store.write([message, message])
    assert (counts.readings, counts.duplicate_readings, counts.status_reports) == (2, 2, 1)


def test_the_first_value_of_a_key_wins(db: str, store: Store) -> None:
    topic, first = reading(5, count=1)
    second = json.loads(json.dumps(first))
    second["msg_id"] = "gw-01:999"
    second["readings"][0]["value"] = "1.5"
    store.write([parsed((topic, first))])
    assert store.write([parsed((topic, second))]).duplicate_readings == 1
    assert stored_rows(db) == rows_of([(topic, first)])


def test_raw_frames_are_kept_once_with_their_reason(db: str, store: Store) -> None:
    frames = [parsed(raw(1, meter_id="KAM-99873476")), parsed(raw(2, meter_id=None))]
    assert store.write(frames) == BatchCounts(raw_frames=2, new_meters=1)
    assert store.write(frames) == BatchCounts(duplicate_raw_frames=2)
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT meter_id, frame, error_type, error_offset, location, decoded_at"
            " FROM raw_frames ORDER BY seq"
        ).fetchall()
    assert rows == [
        ("KAM-99873476", bytes.fromhex("2E442D2C998734761B16"), "MissingKeyError", 15,
         {"lat": 56.95, "lon": 24.1}, None),
        (None, bytes.fromhex("2E442D2C998734761B16"), "MissingKeyError", 15,
         {"lat": 56.95, "lon": 24.1}, None),
    ]  # fmt: skip


def test_dead_letters_keep_any_bytes_once(db: str, store: Store) -> None:
    letter = DeadLetter("metergate/gw\x00/x/reading", b"\x00\xff\xfe", "bad\x00 payload", NOW)
    assert store.write([letter, letter]) == BatchCounts(dead_letters=1)
    assert store.write([letter]) == BatchCounts()
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT topic, payload, error, received_at FROM dead_letters")
        assert rows.fetchall() == [
            ("metergate/gw\ufffd/x/reading", b"\x00\xff\xfe", "bad\ufffd payload", NOW)
        ]


def test_heard_meters_are_registered_as_unregistered_and_registered_ones_kept(
    db: str, store: Store
) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO meters (meter_id, medium, premise) VALUES ('KAM-00000001', 'cold water',"
            " 'Brivibas 1-4')"
        )
    store.write([parsed(reading(seq)) for seq in (1, 2, 51)])
    with psycopg.connect(db) as conn:
        meters = conn.execute(
            "SELECT meter_id, manufacturer, medium, status, premise FROM meters ORDER BY 1"
        ).fetchall()
    assert meters == [
        ("KAM-00000001", None, "cold water", "active", "Brivibas 1-4"),
        ("KAM-00000002", "KAM", "water", "unregistered", None),
    ]


def test_meter_status_flags_are_kept_per_message(db: str, store: Store) -> None:
    store.write([parsed(reading(seq)) for seq in (6, 7)])
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT msg_id, flags, raw FROM meter_status ORDER BY 1").fetchall()
    assert rows == [("gw-01:6", [], 0), ("gw-01:7", ["leak"], 4)]


def test_a_refused_batch_writes_nothing_and_says_so(db: str, store: Store) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE readings ADD CONSTRAINT test_refuse CHECK (meter_id <> 'BAD-00000000')"
        )
    try:
        batch = [parsed(reading(seq)) for seq in range(5)]
        batch.append(parsed(reading(9, meter_id="BAD-00000000")))
        batch.append(DeadLetter("t", b"x", "bad", NOW))
        with pytest.raises(BatchRejected, match="test_refuse"):
            store.write(batch)
        for table in ("readings", "meters", "meter_status", "dead_letters"):
            assert count(db, f"SELECT count(*) FROM {table}") == 0
        assert store.write(batch[:5]).readings == 10
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("ALTER TABLE readings DROP CONSTRAINT test_refuse")


def test_an_unreachable_database_is_unavailable_not_rejected() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with Store(url, timeout_s=1) as store, pytest.raises(DatabaseUnavailable):
        store.write([parsed(reading(1))])


def test_a_missing_table_waits_rather_than_dead_letters(db: str, store: Store) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("ALTER TABLE meter_status RENAME TO meter_status_away")
    try:
        with pytest.raises(DatabaseUnavailable, match="meter_status"):
            store.write([parsed(reading(1))])
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("ALTER TABLE meter_status_away RENAME TO meter_status")
    assert store.write([parsed(reading(1))]).readings == 2


def test_overlapping_batches_from_two_writers_in_opposite_orders_do_not_deadlock(
    db: str,
) -> None:
    messages = [parsed(reading(seq, count=4)) for seq in range(300)]
    failures: list[BaseException] = []
    totals: list[BatchCounts] = []

    def writer(batch: list[Message]) -> None:
        try:
            with Store(db) as store:
                for start in range(0, len(batch), 100):
                    totals.append(store.write(batch[start : start + 100]))
        except BaseException as exc:
            failures.append(exc)

    threads = [
        threading.Thread(target=writer, args=(messages,)),
        threading.Thread(target=writer, args=(messages[::-1],)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert sum(t.readings for t in totals) == 1200
    assert sum(t.readings + t.duplicate_readings for t in totals) == 2400
    assert count(db, "SELECT count(*) FROM readings") == 1200
