"""`metergate keys` and `metergate meters import` as an operator runs them: a real subprocess
against the real PostgreSQL, with real encrypted frames from the simulated fleet that reached
the ingest as raw/1 before their key was known (gateway pipeline -> spool -> ingest store)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import create_token
from api.settings import Settings
from decoders.decode import Decoder
from firmware_sim.wmbus_meters import Transmission, WmbusMeter
from gateway.frames import RawFrame
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline
from gateway.spool import Spool
from ingest.engine_loop import EngineLoop
from ingest.engine_marks import DECODING_LOCK
from ingest.payload import ReadingMessage, parse_message
from ingest.recover import store_key
from ingest.store import Store, reading_rows
from metergate.profiles import load_profiles
from tests.drivers.wmbus_sim import START, air
from tests.ingest.services import count

pytestmark = pytest.mark.timeout(180)

METER = "APA-23503245"  # security mode 5, sends compact frames: a full one every 8th
OTHER = "APA-23503244"  # security mode 7, never given a key here
GATEWAY = "gw-07"
DAMAGED = (3, 10)  # frames of METER whose ciphertext is damaged: they never decode
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Stored:
    """What went into raw_frames: METER's frames (received order) and the readings rows that the
    gateway would have published, had it had the key."""

    frames: list[RawFrame]
    expected: dict[tuple[object, ...], tuple[object, ...]]
    transmissions: list[Transmission]


def run(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> Any:
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "metergate", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env={**environ, **(env or {})},
    )


def wmbus_meter(meter_id: str) -> WmbusMeter:
    return next(m for m in air().meters if m.meter.identity.meter_id == meter_id)


def key_of(meter_id: str) -> str:
    return air().keys()[meter_id].hex().upper()


def _frame(tx: Transmission, *, damaged: bool = False) -> RawFrame:
    data = bytearray(tx.frame)
    received_at = tx.at
    if damaged:
        data[16] ^= 0x55  # the first encrypted block (after the 15-byte short-header frame start)
        received_at += timedelta(seconds=1)
    return RawFrame(bytes(data), received_at, "im871a:/dev/ttyUSB0", "wmbus", tx.level_dbm)


def gateway_messages(
    frames: Sequence[RawFrame], tmp_path: Path, keys: dict[str, bytes], decoder: Decoder
) -> list[Any]:
    """The messages the gateway spools for `frames`: its pipeline, its spool numbering."""
    spool = Spool(tmp_path / f"spool-{len(keys)}.db", GATEWAY)
    try:
        pipeline = Pipeline(GATEWAY, spool, keys=keys, metrics=GatewayMetrics(), decoder=decoder)
        spool.append_many(pipeline.messages(frames))
        return [parse_message(m.topic, m.payload) for m in spool.pending(10_000)]
    finally:
        spool.close()


def row_key_and_rest(
    rows: Iterable[tuple[object, ...]],
) -> dict[tuple[object, ...], tuple[object, ...]]:
    """Rows by their readings key (the first value of a key wins), without msg_id."""
    out: dict[tuple[object, ...], tuple[object, ...]] = {}
    for row in rows:
        out.setdefault(tuple(row[:7]), tuple(row[7:12]))
    return out


@pytest.fixture
def stored(db: str, tmp_path: Path) -> Stored:
    """METER's frames over 10 minutes (compact ones before the first full one, two damaged) and
    two of OTHER, stored as the gateway without their keys sent them."""
    transmissions = [
        wmbus_meter(METER).transmission(t)
        for t in wmbus_meter(METER).meter.transmissions(START, START + timedelta(minutes=10))
    ]
    frames = [_frame(tx) for tx in transmissions]
    frames += [_frame(transmissions[i], damaged=True) for i in DAMAGED]
    frames.sort(key=lambda frame: frame.received_at)
    other = wmbus_meter(OTHER)
    frames_other = [
        _frame(other.transmission(t))
        for t in other.meter.transmissions(START, START + timedelta(minutes=4))
    ]
    messages = gateway_messages(frames + frames_other, tmp_path, {}, Decoder(load_profiles()))
    assert all(message.schema_name == "raw/1" for message in messages)
    with Store(db) as store:
        store.write(messages)
    # What the gateway would have sent with the key and a format already learned.
    taught = Decoder(load_profiles())
    full = next(tx for tx in transmissions if not tx.compact)
    taught.decode(full.frame, air().keys()[METER], link_format="none")
    with_key = gateway_messages(frames, tmp_path, air().keys(), taught)
    rows = [r for m in with_key if isinstance(m, ReadingMessage) for r in reading_rows(m)]
    assert sum(isinstance(m, ReadingMessage) for m in with_key) == len(transmissions)
    return Stored(frames, row_key_and_rest(rows), transmissions)


def readings(url: str) -> dict[tuple[object, ...], tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT meter_id, quantity, storage, tariff, subunit, function, measured_at, value,"
            " unit, received_at, gateway_id, source FROM readings"
        ).fetchall()
    return row_key_and_rest(rows)


def test_keys_add_decodes_the_frames_stored_before_the_key(db: str, stored: Stored) -> None:
    total = len(stored.frames)
    assert stored.transmissions[0].compact and not stored.transmissions[6].compact
    key = key_of(METER)
    result = run("keys", "add", METER.lower(), key, "--database-url", db)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"{METER}: key stored; {total - 2} of {total} stored frames decoded again, 2 still fail"
    )
    assert any("2 x DecryptionError" in line for line in lines)
    for text in (result.stdout, result.stderr):
        assert key.lower() not in text.lower()

    # Exactly the rows the gateway would have published with the key: first received wins.
    assert readings(db) == stored.expected
    # And what the meters said, by the simulation's own model.
    volumes: dict[object, Decimal] = {}
    for tx in stored.transmissions:
        meter = wmbus_meter(METER).meter
        minute = meter.clock_at(tx.at).replace(second=0, microsecond=0)
        volumes.setdefault(minute, meter.index_at(tx.at))
    assert {
        k[6]: v[0] for k, v in readings(db).items() if k[1] == "volume" and k[2] == 0
    } == volumes
    with psycopg.connect(db) as conn:
        kept = conn.execute(
            "SELECT meter_id, decoded_at IS NOT NULL, error_type FROM raw_frames"
        ).fetchall()
        # Each reading names the message that brought its frame.
        strays = conn.execute(
            "SELECT count(*) FROM readings WHERE msg_id NOT IN"
            " (SELECT msg_id FROM raw_frames WHERE decoded_at IS NOT NULL)"
        ).fetchone()
        stored_key = conn.execute("SELECT key FROM meter_keys").fetchall()
    # Every frame is kept as evidence; the damaged ones and OTHER's still wait.
    assert sorted(kept) == sorted(
        [(METER, True, "MissingKeyError")] * (total - 2)
        + [(METER, False, "MissingKeyError")] * 2
        + [(OTHER, False, "MissingKeyError")] * (len(kept) - total)
    )
    assert strays == (0,)
    assert count(db, "SELECT count(*) FROM meter_status") == total - 2
    assert stored_key == [(bytes.fromhex(key),)]

    again = run("keys", "add", METER, key, "--database-url", db)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == (
        f"{METER}: key stored; 0 of 2 stored frames decoded again, 2 still fail"
    )
    assert readings(db) == stored.expected


def test_the_api_key_put_decodes_the_stored_frames_too(db: str, stored: Stored) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        token = create_token(conn, "registry", ["meters:admin"])[1]
    with TestClient(create_app(Settings(database_url=db))) as client:
        response = client.put(
            f"/v1/meters/{METER}/key",
            json={"key": key_of(METER)},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 204, response.text
    assert readings(db) == stored.expected
    assert count(db, "SELECT count(*) FROM raw_frames WHERE decoded_at IS NULL") == 2 + (
        count(db, f"SELECT count(*) FROM raw_frames WHERE meter_id = '{OTHER}'")
    )


def test_raw_frames_of_a_meter_whose_key_is_stored_are_decoded_by_the_engine_thread(
    db: str, stored: Stored, tmp_path: Path
) -> None:
    """A gateway without the key sends raw/1, but the database has it (stored through the API
    or `keys add` earlier): the worker's engine thread decodes them, tries each frame once,
    and the engines then run the meter from the readings' time on."""
    with psycopg.connect(db, autocommit=True) as conn:
        store_key(conn, METER, air().keys()[METER])
    engines = EngineLoop(db, delay_s=0)
    try:
        check_the_engine_thread_decodes(db, stored, tmp_path, engines)
    finally:
        engines.stop()


def check_the_engine_thread_decodes(
    db: str, stored: Stored, tmp_path: Path, engines: EngineLoop
) -> None:
    assert engines.run_pending()
    assert readings(db) == stored.expected
    assert engines.frames_decoded == len(stored.frames) - 2
    untried = "SELECT count(*) FROM raw_frames WHERE tried_at IS NULL AND decoded_at IS NULL"
    assert count(db, untried) == 0  # OTHER's (no key) and the damaged two: tried once
    assert count(db, "SELECT count(*) FROM engine_marks") == 0  # run by the same pass
    assert count(db, "SELECT count(*) FROM meter_status") == len(stored.frames) - 2

    tried = "SELECT id, tried_at FROM raw_frames WHERE tried_at IS NOT NULL ORDER BY id"
    with psycopg.connect(db) as conn:
        before = conn.execute(tried).fetchall()
    assert engines.run_pending()  # nothing new: the failures are not tried again
    assert engines.frames_decoded == len(stored.frames) - 2
    with psycopg.connect(db) as conn:
        assert conn.execute(tried).fetchall() == before
    # A new frame of the meter arrives raw (the gateway still has no key).
    later = wmbus_meter(METER).transmission(START + timedelta(minutes=11))
    with Store(db) as store:
        store.write(gateway_messages([_frame(later)], tmp_path, {}, Decoder(load_profiles())))
    assert engines.run_pending()
    assert engines.frames_decoded == len(stored.frames) - 1


def test_a_meter_another_worker_is_decoding_is_left_to_it(db: str, stored: Stored) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        store_key(conn, METER, air().keys()[METER])
    engines = EngineLoop(db, delay_s=0)
    untried = f"SELECT count(*) FROM raw_frames WHERE meter_id = '{METER}' AND tried_at IS NULL"
    try:
        with psycopg.connect(db, autocommit=True) as other_worker:
            other_worker.execute(
                "SELECT pg_advisory_lock(%s, hashtext(%s))", (DECODING_LOCK, METER)
            )
            assert engines.run_pending()
            assert engines.frames_decoded == 0
            assert count(db, untried) == len(stored.frames)  # its frames, untouched
        assert engines.run_pending()  # the other worker is gone (and left them)
    finally:
        engines.stop()
    assert engines.frames_decoded == len(stored.frames) - 2
    assert readings(db) == stored.expected


@pytest.mark.parametrize("teacher", [METER, OTHER])
def test_compact_frames_tried_before_their_format_was_known_are_opened_by_a_later_full_one(
    db: str, tmp_path: Path, teacher: str
) -> None:
    """METER's first frames are compact; the engine thread tries them before any full frame
    of the model reached it, and they fail. A full frame that comes later teaches the format,
    its own or another meter's of the model (OTHER's), and the thread then opens the compact
    frames it had given up on."""
    meter = wmbus_meter(METER)
    heard = meter.meter.transmissions(START, START + timedelta(minutes=10))
    transmissions = [meter.transmission(t) for t in heard]
    first_full = next(n for n, tx in enumerate(transmissions) if not tx.compact)
    early = transmissions[:first_full]
    assert early and all(tx.compact for tx in early)
    other = wmbus_meter(teacher)
    full = next(
        tx
        for t in other.meter.transmissions(START, START + timedelta(minutes=10))
        if not (tx := other.transmission(t)).compact
    )
    with psycopg.connect(db, autocommit=True) as conn:
        for meter_id in {METER, teacher}:
            store_key(conn, meter_id, air().keys()[meter_id])
    engines = EngineLoop(db, delay_s=0)
    try:
        with Store(db) as store:
            decoder = Decoder(load_profiles())
            store.write(gateway_messages([_frame(tx) for tx in early], tmp_path, {}, decoder))
            assert engines.run_pending()
            assert engines.frames_decoded == 0  # compact, and no format known yet: tried
            untried = "SELECT count(*) FROM raw_frames WHERE tried_at IS NULL"
            assert count(db, untried) == 0
            store.write(gateway_messages([_frame(full)], tmp_path, {}, decoder))
            assert engines.run_pending()
    finally:
        engines.stop()
    assert engines.frames_decoded == len(early) + 1
    assert count(db, "SELECT count(*) FROM raw_frames WHERE decoded_at IS NULL") == 0


def test_keys_list_and_remove_never_show_a_key(db: str) -> None:
    key = key_of(OTHER)
    added = run("keys", "add", OTHER, "-", "--database-url", db, stdin=key + "\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout == f"{OTHER}: key stored; no stored frames were waiting for it\n"
    assert f"{OTHER} is not in the meter registry" in added.stderr
    listed = run("keys", "list", "--database-url", db)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"{OTHER}\tadded 20")
    assert key not in listed.stdout.upper()
    assert run("keys", "remove", OTHER.lower(), "--database-url", db).returncode == 0
    gone = run("keys", "remove", OTHER, "--database-url", db)
    assert gone.returncode == 1 and "has no stored key" in gone.stderr
    assert run("keys", "list", "--database-url", db).stdout == ""


@pytest.mark.parametrize(
    ("meter", "key", "message"),
    [
        (METER, "0F1E2D3C4B5A69788796A5B4C3D2E1F", "32 hex digits"),
        (METER, "0F1E2D3C4B5A69788796A5B4C3D2E1FG", "32 hex digits"),
        (METER, "0F1E2D3C4B5A69788796A5B4C3D2E1F000", "32 hex digits"),
        (METER, "0F 1E2D3C4B5A69788796A5B4C3D2E1F0", "32 hex digits"),
        ("APA-2350324", "0F1E2D3C4B5A69788796A5B4C3D2E1F0", "not a meter id"),
        ("modbus-7", "0F1E2D3C4B5A69788796A5B4C3D2E1F0", "not a meter id"),
    ],
)
def test_a_bad_meter_id_or_key_exits_2_and_never_repeats_the_key(
    db: str, meter: str, key: str, message: str
) -> None:
    result = run("keys", "add", meter, key, "--database-url", db)
    assert result.returncode == 2
    assert message in result.stderr
    assert key[:16] not in result.stdout + result.stderr
    assert count(db, "SELECT count(*) FROM meter_keys") == 0


def test_keys_add_without_a_database_exits_2() -> None:
    result = run("keys", "add", METER, key_of(METER))
    assert (result.returncode, result.stdout) == (2, "")
    assert "no database" in result.stderr


CSV = (
    "meter_id;premise;address;customer_ref;medium;kind;country;installed_on;marking_year\n"
    "KAM-60000001;P-1;Brivibas iela 1;C-1;water;;LV;2024-02-01;2024\n"
    "KAM-60000002;P-2;;C-2;water;ultrasonic;LV;2026-02-30;2024\n"
    "KAM-60000003;P-3;;C-3;water;ultrasonic;LV;2025-06-01;\n"
    "\n"
    "not an id!;P-5;;C-5;water;;LV;;\n"
)


def test_meters_import_loads_the_good_rows_and_lists_the_bad_ones(db: str, tmp_path: Path) -> None:
    path = tmp_path / "meters.csv"
    path.write_text(CSV, encoding="utf-8")
    dry = run("meters", "import", str(path), "--database-url", db, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0] == "would load 2 meters (2 new, 0 updated); 2 bad rows:"
    assert count(db, "SELECT count(*) FROM meters") == 0

    result = run("meters", "import", str(path), "--database-url", db)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "loaded 2 meters (2 new, 0 updated); 2 bad rows:",
        "line 3: installed_on: a date is written YYYY-MM-DD, got '2026-02-30'",
        "line 6: meter_id: letters, digits and . _ : - only (e.g. KAM-12345678)",
    ]
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT meter_id, premise, customer_ref, installed_on, next_verification_due"
            " FROM meters ORDER BY meter_id"
        ).fetchall()
        # Marked for the engines from their installation on (no readings yet).
        marks = conn.execute(
            "SELECT meter_id, since::date FROM engine_marks ORDER BY meter_id"
        ).fetchall()
    assert rows == [
        ("KAM-60000001", "P-1", "C-1", date(2024, 2, 1), date(2028, 1, 1)),
        ("KAM-60000003", "P-3", "C-3", date(2025, 6, 1), None),
    ]
    assert marks == [("KAM-60000001", date(2024, 2, 1)), ("KAM-60000003", date(2025, 6, 1))]
    again = run("meters", "import", str(path), "--database-url", db)
    assert again.stdout.splitlines()[0] == "loaded 2 meters (0 new, 2 updated); 2 bad rows:"


def test_meters_import_of_only_bad_rows_exits_1(db: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("meter_id,premise,installed_on\nKAM-60000009,P,31.12.2024\n", "utf-8")
    result = run("meters", "import", str(path), "--database-url", db)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "loaded 0 meters (0 new, 0 updated); 1 bad row:",
        "line 2: installed_on: a date is written YYYY-MM-DD, got '31.12.2024'",
    ]


def test_a_dry_run_without_a_database_checks_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "meters.csv"
    path.write_text(CSV, encoding="utf-8")
    result = run("meters", "import", str(path), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "would load 2 meters; 2 bad rows:"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"meter_id,premise\nKAM-60000001,Br\xefv\xefbas\n", "not UTF-8 text (line 2, byte 32)"),
        (b"meter_id,colour\nKAM-60000001,red\n", "unknown column"),
        (None, "cannot read"),
    ],
)
def test_meters_import_of_an_unreadable_file_exits_2(
    db: str, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "meters.csv"
    if content is not None:
        path.write_bytes(content)
    result = run("meters", "import", str(path), "--database-url", db)
    assert (result.returncode, result.stdout) == (2, "")
    assert message in result.stderr
    assert count(db, "SELECT count(*) FROM meters") == 0


@pytest.mark.parametrize(
    "args",
    [("keys", "list"), ("keys", "add", METER, "0F1E2D3C4B5A69788796A5B4C3D2E1F0")],
)
def test_an_unreachable_database_exits_1(args: tuple[str, ...]) -> None:
    result = run(*args, "--database-url", "postgresql://postgres@127.0.0.1:1/none")
    assert (result.returncode, result.stdout) == (1, "")
    assert "connection" in result.stderr and "0F1E2D3C" not in result.stderr
