"""The SQLite spool: seq and msg_id, order, persistence, quarantine, bad files, threads."""

from __future__ import annotations

import json
import sqlite3
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.spool import MessageRefusedError, Spool
from metergate.errors import StorageError

GW = "gw-spool"


def reading(meter_id: str, n: int) -> dict[str, Any]:
    return {"schema": "reading/1", "gateway_id": GW, "meter_id": meter_id, "n": n}


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool.sqlite", GW, clock=lambda: 1_700_000_000.5)


def test_append_numbers_messages_and_commits_them(spool: Spool, tmp_path: Path) -> None:
    message = reading("KAM-12345678", 1)
    spooled = spool.append("reading", "KAM-12345678", message)

    assert spooled.seq == 1
    assert message["seq"] == 1 and message["msg_id"] == "gw-spool:1"
    assert spooled.topic == "metergate/gw-spool/KAM-12345678/reading"
    assert spooled.spooled_at == 1_700_000_000.5
    document = json.loads(spooled.payload)
    assert document == message
    # seq and msg_id sit where DESIGN.md section 3 shows them.
    assert list(document)[:4] == ["schema", "gateway_id", "seq", "msg_id"]
    # Committed: another connection (another process would be the same) sees it.
    with sqlite3.connect(tmp_path / "spool.sqlite") as other:
        assert other.execute("SELECT seq FROM outbox").fetchall() == [(1,)]
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_raw_messages_without_a_meter_go_to_the_unknown_topic(spool: Spool) -> None:
    spooled = spool.append("raw", None, {"schema": "raw/1", "frame": "00"})
    assert spooled.topic == "metergate/gw-spool/unknown/raw"
    assert spooled.meter_id is None
    assert spool.pending(10) == [spooled]


def test_pending_is_oldest_first_with_limit_and_cursor(spool: Spool) -> None:
    spooled = spool.append_many(
        ("reading", f"M-{i % 3}", reading(f"M-{i % 3}", i)) for i in range(10)
    )
    assert [m.seq for m in spooled] == list(range(1, 11))

    assert [m.seq for m in spool.pending(4)] == [1, 2, 3, 4]
    assert [m.seq for m in spool.pending(4, after_seq=7)] == [8, 9, 10]
    assert spool.pending(4, after_seq=10) == []
    assert spool.pending(100) == spooled


def test_ack_deletes_only_the_acknowledged(spool: Spool) -> None:
    spool.append_many(("reading", "M-1", reading("M-1", i)) for i in range(5))
    spool.ack(2)
    spool.ack_many([4, 5])
    assert [m.seq for m in spool.pending(10)] == [1, 3]
    assert spool.depth() == 2


def test_seq_survives_a_restart_even_with_an_empty_spool(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    with Spool(path, GW) as first:
        for m in first.append_many(("reading", "M-1", reading("M-1", i)) for i in range(3)):
            first.ack(m.seq)
        assert first.depth() == 0
    with Spool(path, GW) as second:
        assert second.last_seq() == 3
        assert second.append("reading", "M-1", reading("M-1", 9)).seq == 4


def test_a_batch_with_a_bad_message_stores_nothing(spool: Spool) -> None:
    good = reading("M-1", 1)
    bad = reading("M-1", 2) | {"value": Decimal("1.5")}  # not JSON: values travel as strings
    with pytest.raises(MessageRefusedError, match="not JSON-serialisable") as caught:
        spool.append_many([("reading", "M-1", good), ("reading", "M-1", bad)])
    assert caught.value.index == 1

    assert spool.depth() == 0
    assert "seq" not in good and "msg_id" not in good
    assert spool.append("reading", "M-1", reading("M-1", 3)).seq == 1  # no seq was used up


@pytest.mark.parametrize(
    ("kind", "meter_id"), [("reading", "a/b"), ("reading", "M+1"), ("reading", ""), ("nope", "M")]
)
def test_a_message_that_cannot_have_a_topic_is_refused(
    spool: Spool, kind: Any, meter_id: str
) -> None:
    with pytest.raises(StorageError, match="cannot spool"):
        spool.append(kind, meter_id, reading(meter_id, 1))
    assert spool.depth() == 0


def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "readings.csv"
    content = b"meter_id,value\n" + b"KAM-12345678,12.345\n" * 200
    path.write_bytes(content)
    with pytest.raises(StorageError, match="is not a SQLite database") as caught:
        Spool(path, GW)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content


def test_another_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StorageError, match="not a metergate spool"):
        Spool(path, GW)


def test_the_spool_of_another_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    Spool(path, "gw-a").close()
    with pytest.raises(StorageError, match="spool of gateway 'gw-a', not 'gw-b'"):
        Spool(path, "gw-b")


def test_a_spool_path_that_cannot_be_opened(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open"):
        Spool(tmp_path / "missing-dir" / "spool.sqlite", GW)
    with pytest.raises(StorageError):
        Spool(tmp_path, GW)  # a directory


def test_a_closed_spool_says_so(spool: Spool) -> None:
    spool.close()
    with pytest.raises(StorageError, match="closed"):
        spool.append("reading", "M-1", reading("M-1", 1))


CORRUPTIONS = {
    "payload is not UTF-8": ("payload", b"\xff\xfe{}"),
    "payload is not JSON": ("payload", b'{"seq": 2, "msg_id"'),
    "payload is not a JSON object": ("payload", b"[2]"),
    "payload is not a BLOB": ("payload", "text, not bytes"),
    "topic is missing": ("topic", None),
    "topic contains a wildcard or NUL": ("topic", "metergate/gw-spool/#"),
    "payload's seq or msg_id does not match the row": ("payload", b'{"seq": 9, "msg_id": "x:9"}'),
    "spooled_at is missing": ("spooled_at", None),
}


@pytest.mark.parametrize("reason", sorted(CORRUPTIONS))
def test_a_corrupted_row_is_quarantined_not_a_crash(
    spool: Spool, tmp_path: Path, reason: str
) -> None:
    spool.append_many(("reading", "M-1", reading("M-1", i)) for i in range(3))
    column, value = CORRUPTIONS[reason]
    with sqlite3.connect(tmp_path / "spool.sqlite") as other:
        other.execute(f"UPDATE outbox SET {column} = ? WHERE seq = 2", (value,))

    assert [m.seq for m in spool.pending(10)] == [1, 3]
    assert spool.quarantined() == 1
    assert spool.depth() == 2
    with sqlite3.connect(tmp_path / "spool.sqlite") as other:
        kept = other.execute(f"SELECT seq, {column}, reason FROM quarantine").fetchall()
    assert kept == [(2, value, reason)]  # kept as it was found, with the reason


def test_a_corrupted_row_does_not_shorten_a_page(spool: Spool, tmp_path: Path) -> None:
    spool.append_many(("reading", "M-1", reading("M-1", i)) for i in range(6))
    with sqlite3.connect(tmp_path / "spool.sqlite") as other:
        other.execute("UPDATE outbox SET payload = x'00' WHERE seq IN (1, 2)")
    assert [m.seq for m in spool.pending(3)] == [3, 4, 5]
    assert spool.quarantined() == 2


def test_a_producer_and_a_publisher_thread_share_the_spool(spool: Spool) -> None:
    total = 1000
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def produce() -> None:
        try:
            for start in range(0, total, 10):
                batch = [("reading", f"M-{i % 7}", reading(f"M-{i % 7}", i)) for i in range(10)]
                if start % 20:
                    spool.append_many(batch)
                else:
                    for kind, meter_id, message in batch:
                        spool.append(kind, meter_id, message)  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def consume() -> None:
        try:
            while True:
                finished = done.is_set()
                batch = spool.pending(50, after_seq=seen[-1] if seen else 0)
                seen.extend(m.seq for m in batch)
                spool.ack_many([m.seq for m in batch])
                if finished and not batch:
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert seen == list(range(1, total + 1))
    assert spool.depth() == 0
