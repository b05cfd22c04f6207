"""reading/1 and raw/1 payloads from real decoded telegrams (DESIGN.md sections 2 and 3)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from decoders.decode import Decoder
from decoders.modbus_map import decode_registers, status_flags
from decoders.record_encoder import encode_records
from decoders.telegram import RecordValue, Status, TplHeader
from decoders.wmbus_link import make_address
from decoders.wmbus_seal import seal_wmbus
from firmware_sim.fleet import Fleet
from firmware_sim.wmbus_meters import WmbusFleet
from gateway.frames import Location, RawFrame
from gateway.messages import (
    raw_message,
    reading_message,
    records_message,
    status_topic,
    topic,
    undecoded_meter_id,
)
from ingest.payload import RawMessage, ReadingMessage, parse_message
from metergate.errors import DecodeError, DecryptionError, MissingKeyError, UnsupportedError
from metergate.profiles import builtin_register_maps, load_profiles

RIGA = ZoneInfo("Europe/Riga")
RECEIVED = datetime(2026, 11, 2, 9, 30, 5, tzinfo=UTC)
GATEWAY = "gw-01"
REPO = Path(__file__).resolve().parents[2]
ADDRESS = make_address("ELS", "12345678", 0x1A, 0x07)
KEY = bytes(range(16))

# The example of DESIGN.md section 3, less seq and msg_id, which the spool adds.
DESIGN_EXAMPLE = json.loads("""
{"schema": "reading/1", "gateway_id": "gw-01", "seq": 18231, "msg_id": "gw-01:18231",
 "meter_id": "KAM-12345678", "manufacturer": "KAM", "medium": "water", "protocol": "wmbus",
 "frame": "2E44...", "rssi_dbm": -71, "location": null,
 "received_at": "2026-10-31T22:00:03Z",
 "status": {"flags": ["leak"], "raw": 4},
 "readings": [{"quantity": "volume", "unit": "m3", "value": "123.456", "storage": 0,
               "tariff": 0, "subunit": 0, "function": "instantaneous",
               "measured_at": "2026-10-31T22:00:00Z"}]}
""")
MESSAGE_KEYS = set(DESIGN_EXAMPLE) - {"seq", "msg_id"}
READING_KEYS = set(DESIGN_EXAMPLE["readings"][0])


def wmbus_frame(
    records: list[tuple[str, RecordValue]], *, status: int = 0, key: bytes | None = None
) -> bytes:
    apl = encode_records([(bytes.fromhex(header), value) for header, value in records])
    tpl = TplHeader(ci=0x7A, access_no=33, status=status, config=(5 << 8) if key else 0)
    return seal_wmbus(0x44, ADDRESS, tpl, apl, key=key)


def raw_of(frame: bytes, **kwargs: Any) -> RawFrame:
    return RawFrame(
        frame, kwargs.pop("received_at", RECEIVED), "im871a:/dev/ttyUSB0", "wmbus", **kwargs
    )


def message_of(records: list[tuple[str, RecordValue]], **kwargs: Any) -> dict[str, Any]:
    frame = wmbus_frame(records)
    return reading_message(Decoder().decode(frame), raw_of(frame), GATEWAY, **kwargs)


def by_storage(message: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """The tariff-0 readings by quantity and storage number."""
    return {(r["quantity"], r["storage"]): r for r in message["readings"] if r["tariff"] == 0}


def accepted_by_ingest(message: dict[str, Any], seq: int = 1) -> ReadingMessage | RawMessage:
    """The payload as the spool sends it, through the ingest's own strict parser."""
    sent = dict(message, seq=seq, msg_id=f"{message['gateway_id']}:{seq}")
    where = topic(GATEWAY, sent["meter_id"], "reading" if sent["schema"] == "reading/1" else "raw")
    return parse_message(where, json.dumps(sent).encode())


RICH: list[tuple[str, RecordValue]] = [
    ("046D", datetime(2026, 10, 31, 23, 45)),  # the meter's clock, local time
    ("0413", Decimal("1234.567")),
    ("426C", date(2026, 10, 31)),  # month end of October
    ("4413", Decimal("1200.000")),
    ("82016C", date(2026, 6, 30)),  # storage 2: month end of June, summer time
    ("840113", Decimal("1100.001")),
    ("C40113", Decimal("1000.000")),  # storage 3 without a date: not a reading
    ("8E1013", Decimal("123456789.012")),  # tariff 1, 12-digit BCD
    ("053E", Decimal("0.1")),  # real32 volume flow
    ("049315", Decimal("5.000")),  # a value the meter flags with record error 15
    ("0DFD11", "Brivibas 1"),  # text
    ("0F", "01020304"),  # manufacturer data
]


def test_a_telegram_becomes_the_reading_payload_of_the_design() -> None:
    message = message_of(RICH)
    assert set(message) == MESSAGE_KEYS
    assert all(set(r) == READING_KEYS for r in message["readings"])
    assert message["schema"] == "reading/1"
    assert message["gateway_id"] == GATEWAY
    assert message["meter_id"] == "ELS-12345678"
    assert message["manufacturer"] == "ELS"
    assert message["medium"] == "water"
    assert message["protocol"] == "wmbus"
    assert message["frame"] == wmbus_frame(RICH).hex().upper()
    assert message["rssi_dbm"] is None
    assert message["location"] is None
    assert message["received_at"] == "2026-11-02T09:30:05Z"
    assert json.loads(json.dumps(message)) == message


def test_storage_zero_values_carry_the_meters_clock() -> None:
    readings = by_storage(message_of(RICH))
    # 23:45 on 31 October in Riga is EET (+02:00): summer time ended on 25 October.
    assert readings["volume", 0]["measured_at"] == "2026-10-31T21:45:00Z"
    assert readings["volume", 0]["value"] == "1234.567"
    assert readings["volume_flow", 0]["measured_at"] == "2026-10-31T21:45:00Z"


def test_month_end_registers_take_the_date_of_their_storage_number() -> None:
    readings = by_storage(message_of(RICH))
    # The register dated 31 October is the index at 00:00 on 1 November, Riga time.
    assert readings["volume", 1]["measured_at"] == "2026-10-31T22:00:00Z"
    assert readings["volume", 1]["value"] == "1200.000"
    # June's register: 00:00 on 1 July in summer time (+03:00).
    assert readings["volume", 2]["measured_at"] == "2026-06-30T21:00:00Z"
    assert readings["volume", 2]["value"] == "1100.001"
    assert ("volume", 3) not in readings


def test_the_zone_is_a_parameter() -> None:
    readings = by_storage(message_of(RICH, zone=ZoneInfo("Europe/Berlin")))
    assert readings["volume", 1]["measured_at"] == "2026-10-31T23:00:00Z"
    assert readings["volume", 0]["measured_at"] == "2026-10-31T22:45:00Z"
    utc = by_storage(message_of(RICH, zone=UTC))
    assert utc["volume", 2]["measured_at"] == "2026-07-01T00:00:00Z"


def test_only_numeric_values_become_readings_exactly() -> None:
    message = message_of(RICH)
    quantities = [(r["quantity"], r["storage"], r["tariff"]) for r in message["readings"]]
    assert quantities == [
        ("volume", 0, 0),
        ("volume", 1, 0),
        ("volume", 2, 0),
        ("volume", 0, 1),
        ("volume_flow", 0, 0),
    ]
    values = {(r["quantity"], r["tariff"], r["storage"]): r["value"] for r in message["readings"]}
    assert values["volume", 1, 0] == "123456789.012"
    assert values["volume_flow", 0, 0] == "0.1"  # real32 by its shortest repr
    assert values["volume", 0, 1] == "1200.000"  # trailing zeros kept: the meter's resolution
    assert all(isinstance(r["value"], str) for r in message["readings"])


def test_without_a_meter_clock_values_are_measured_when_received() -> None:
    readings = by_storage(message_of([("0413", Decimal("1.000")), ("4413", Decimal("0.500"))]))
    assert readings["volume", 0]["measured_at"] == "2026-11-02T09:30:05Z"
    assert ("volume", 1) not in readings  # a register with no date cannot be placed in time


def test_a_date_only_record_of_storage_zero_is_no_time_of_reading() -> None:
    records: list[tuple[str, RecordValue]] = [("026C", date(2026, 11, 2))]
    records.append(("0413", Decimal("2.000")))
    readings = by_storage(message_of(records))
    assert readings["volume", 0]["measured_at"] == "2026-11-02T09:30:05Z"


def test_date_and_time_of_a_register_wins_over_its_date() -> None:
    records: list[tuple[str, RecordValue]] = [
        ("426C", date(2026, 3, 31)),
        ("446D", datetime(2026, 3, 31, 23, 59)),
        ("4413", Decimal("7.000")),
    ]
    readings = by_storage(message_of(records))
    # 31 March 2026 is after the switch to summer time (29 March): +03:00.
    assert readings["volume", 1]["measured_at"] == "2026-03-31T20:59:00Z"


def test_the_hour_that_happens_twice_reads_as_summer_time() -> None:
    records: list[tuple[str, RecordValue]] = [("046D", datetime(2026, 10, 25, 3, 30))]
    records.append(("0413", Decimal("3.000")))
    readings = by_storage(message_of(records))
    assert readings["volume", 0]["measured_at"] == "2026-10-25T00:30:00Z"


def test_radio_details_and_status() -> None:
    frame = wmbus_frame([("0413", Decimal("1.000"))], status=0x04)
    raw = raw_of(
        frame,
        rssi_dbm=Decimal("-70.5"),
        location=Location(Decimal("56.949600"), Decimal("24.105200"), RECEIVED),
        received_at=datetime(2026, 11, 2, 11, 30, 5, 250000, tzinfo=timezone(timedelta(hours=2))),
    )
    message = reading_message(Decoder().decode(frame), raw, GATEWAY)
    assert message["rssi_dbm"] == -71
    assert message["location"] == {"lat": "56.949600", "lon": "24.105200"}
    assert message["received_at"] == "2026-11-02T09:30:05.250000Z"
    assert message["status"] == {"flags": ["low_battery"], "raw": 4}
    assert raw_of(frame, rssi_dbm=Decimal("-71")).rssi_dbm == Decimal("-71")


def test_the_ingest_accepts_the_payloads() -> None:
    frame = wmbus_frame(RICH)
    raw = raw_of(frame, rssi_dbm=Decimal("-88.5"), location=Location(Decimal("1"), Decimal("2")))
    parsed = accepted_by_ingest(reading_message(Decoder().decode(frame), raw, GATEWAY))
    assert isinstance(parsed, ReadingMessage)
    assert parsed.meter_id == "ELS-12345678"
    assert parsed.frame == frame
    assert [r.value for r in parsed.readings][:3] == [
        Decimal("1234.567"),
        Decimal("1200.000"),
        Decimal("1100.001"),
    ]
    assert parsed.readings[1].measured_at == datetime(2026, 10, 31, 22, tzinfo=UTC)


def sim_fleet() -> WmbusFleet:
    return WmbusFleet(Fleet.generate(30, seed=11))


def test_simulated_meters_month_end_register_lands_on_the_boundary() -> None:
    air = sim_fleet()
    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    decoder = Decoder()
    checked = 0
    full = [tx for tx in air.transmissions(start, start + timedelta(minutes=10)) if not tx.compact]
    for tx in full[:20]:
        meter = air.fleet.by_meter_id(tx.meter_id)
        telegram = decoder.decode(tx.frame, meter.key_at(tx.at), link_format="none")
        raw = RawFrame(tx.frame, tx.at, "sim", "wmbus", rssi_dbm=tx.level_dbm)
        message = reading_message(telegram, raw, GATEWAY)
        ((month_end, index),) = meter.month_end_indexes(tx.at, 1)
        assert month_end == date(2026, 2, 28)
        register = by_storage(message)["volume", 1]
        # The boundary of February: 00:00 on 1 March, Riga (EET).
        assert register["measured_at"] == "2026-02-28T22:00:00Z"
        assert register["value"] == format(index, "f")
        current = by_storage(message)["volume", 0]
        clock = meter.clock_at(tx.at).replace(second=0, microsecond=0)
        expected = clock.astimezone(RIGA).replace(second=0).astimezone(UTC)
        assert current["measured_at"] == expected.isoformat().replace("+00:00", "Z")
        assert current["value"] == format(meter.index_at(tx.at), "f")
        assert isinstance(accepted_by_ingest(message), ReadingMessage)
        checked += 1
    assert checked == 20


def example_lines() -> list[tuple[bytes, bytes | None]]:
    out = []
    for line in (REPO / "examples" / "telegrams.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            parts = line.split()
            out.append((bytes.fromhex(parts[0]), bytes.fromhex(parts[1]) if parts[1:] else None))
    return out


def test_every_sample_telegram_gives_a_payload_or_a_raw_message() -> None:
    decoder = Decoder(load_profiles())
    readings = raws = 0
    for frame, key in example_lines():
        protocol = "mbus" if frame[0] == 0x68 else "wmbus"
        raw = RawFrame(frame, RECEIVED, "examples", protocol)
        try:
            message = reading_message(decoder.decode(frame, key), raw, GATEWAY)
        except DecodeError as error:
            message = raw_message(raw, error, GATEWAY, undecoded_meter_id(raw, error))
            raws += 1
        else:
            readings += 1
            assert set(message) == MESSAGE_KEYS
            assert message["protocol"] == protocol
        json.dumps(message)
        accepted_by_ingest(message)
    assert (readings, raws) == (7, 2)


def test_wired_mbus_frame() -> None:
    frame = bytes.fromhex("681B1B6808017207201800E61E35074C0000000C78072018000C16690200009616")
    raw = RawFrame(frame, RECEIVED, "/dev/ttyUSB1", "mbus")
    message = reading_message(Decoder().decode(frame), raw, GATEWAY)
    assert message["meter_id"] == "GWF-00182007"
    assert message["protocol"] == "mbus"
    assert [(r["quantity"], r["value"]) for r in message["readings"]] == [
        ("fabrication_no", "182007"),
        ("volume", "269"),
    ]


def test_a_profile_renamed_date_still_dates_its_register() -> None:
    # decoders/profiles/itron_water.toml's own vector: 426C renamed target_date, 066D
    # meter_datetime.
    frame = bytes.fromhex(
        "2D4497269856341200077AD90000000413FD110000066D2C1AA1D521034413300F0000426CBF2C04933C0200"
        "0000"
    )
    telegram = Decoder(load_profiles()).decode(frame)
    assert [r.spec.name for r in telegram.records if r.storage == 1] == ["target", "target_date"]
    readings = by_storage(reading_message(telegram, raw_of(frame), GATEWAY))
    assert readings["volume", 1]["measured_at"] == "2021-12-31T22:00:00Z"
    assert readings["volume", 1]["value"] == "3.888"
    assert readings["volume", 0]["measured_at"] == "2022-01-20T23:26:44Z"
    assert {quantity for quantity, _ in readings} == {"volume", "volume_backward"}


def test_a_telegram_without_a_meter_is_no_reading() -> None:
    # CI 70: a wired application error, which names no meter.
    frame = bytes.fromhex("68040468080170017A16")
    telegram = Decoder().decode(frame)
    raw = RawFrame(frame, RECEIVED, "/dev/ttyUSB1", "mbus")
    with pytest.raises(UnsupportedError) as caught:
        reading_message(telegram, raw, GATEWAY)
    message = raw_message(raw, caught.value, GATEWAY, None)
    assert message["meter_id"] is None
    assert topic(GATEWAY, None, "raw") == "metergate/gw-01/unknown/raw"
    assert isinstance(accepted_by_ingest(message), RawMessage)


def test_raw_message_of_a_frame_without_its_key() -> None:
    frame = wmbus_frame([("0413", Decimal("9.000"))], key=KEY)
    raw = raw_of(frame, rssi_dbm=Decimal("-60"))
    with pytest.raises(MissingKeyError) as missing:
        Decoder().decode(frame)
    meter_id = undecoded_meter_id(raw, missing.value)
    assert meter_id == "ELS-12345678"
    message = raw_message(raw, missing.value, GATEWAY, meter_id)
    assert set(message) == {
        "schema",
        "gateway_id",
        "meter_id",
        "protocol",
        "frame",
        "rssi_dbm",
        "location",
        "received_at",
        "error",
    }
    assert message["schema"] == "raw/1"
    assert message["error"]["type"] == "MissingKeyError"
    assert message["frame"] == frame.hex().upper()
    assert message["rssi_dbm"] == -60
    parsed = accepted_by_ingest(message)
    assert isinstance(parsed, RawMessage)
    assert parsed.meter_id == "ELS-12345678"


def test_raw_message_of_a_wrong_key_shows_no_key() -> None:
    frame = wmbus_frame([("0413", Decimal("9.000"))], key=KEY)
    wrong = bytes(reversed(KEY))
    with pytest.raises(DecryptionError) as caught:
        Decoder().decode(frame, wrong)
    raw = raw_of(frame)
    message = raw_message(raw, caught.value, GATEWAY, undecoded_meter_id(raw, caught.value))
    assert message["meter_id"] == "ELS-12345678"  # from the link header
    assert message["error"]["type"] == "DecryptionError"
    text = json.dumps(message).upper()
    assert KEY.hex().upper() not in text
    assert wrong.hex().upper() not in text


def test_an_unreadable_frame_has_no_meter() -> None:
    raw = raw_of(b"\x05\x44\x01")
    assert undecoded_meter_id(raw, DecodeError("short")) is None
    mbus = RawFrame(b"\x68\x00", RECEIVED, "bus", "mbus")
    assert undecoded_meter_id(mbus, DecodeError("short")) is None


def test_modbus_records_message() -> None:
    register_map = builtin_register_maps()["generic-magmeter"]
    vector = register_map.tests[0]
    records = decode_registers(register_map, dict(vector.registers))
    flags = status_flags(register_map, records)
    raw = RawFrame(b"\x00\x01", RECEIVED, "tcp://127.0.0.1:5020#1", "modbus")
    message = records_message(
        "SIE-00004711",
        register_map.manufacturer,
        "water",
        records,
        raw,
        GATEWAY,
        status=Status(0, flags),
    )
    assert set(message) == MESSAGE_KEYS
    assert message["protocol"] == "modbus"
    assert message["status"]["flags"] == list(flags)
    expected = {name: value for name, value in vector.expect if value is not None}
    by_quantity = {r["quantity"]: r for r in message["readings"]}
    assert len(message["readings"]) == len(expected)
    for record in records:
        if record.spec.name in expected:
            reading = by_quantity[record.quantity]
            assert Decimal(reading["value"]) == expected[record.spec.name]
            assert reading["value"] == format(record.value, "f")
            assert reading["measured_at"] == "2026-11-02T09:30:05Z"
    assert isinstance(accepted_by_ingest(message), ReadingMessage)


def test_topics() -> None:
    assert topic("gw-01", "KAM-12345678", "reading") == "metergate/gw-01/KAM-12345678/reading"
    assert topic("gw-01", "KAM-12345678", "raw") == "metergate/gw-01/KAM-12345678/raw"
    assert status_topic("gw-01") == "metergate/gw-01/status"
    with pytest.raises(ValueError, match="kind"):
        topic("gw-01", None, "status")  # type: ignore[arg-type]
    for bad in ("a/b", "a+", "#", ""):
        with pytest.raises(ValueError, match="topic level"):
            topic("gw-01", bad, "reading")
        with pytest.raises(ValueError, match="topic level"):
            status_topic(bad)


def test_frames_refuse_what_cannot_be_sent() -> None:
    with pytest.raises(ValueError, match="aware"):
        RawFrame(b"\x00", datetime(2026, 1, 1), "x", "wmbus")
    with pytest.raises(ValueError, match="protocol"):
        RawFrame(b"\x00", RECEIVED, "x", "zigbee")
    with pytest.raises(ValueError, match="latitude"):
        Location(Decimal("90.5"), Decimal("0"))
    with pytest.raises(ValueError, match="longitude"):
        Location(Decimal("0"), Decimal("-181"))
    with pytest.raises(ValueError, match="longitude"):
        Location(Decimal("0"), Decimal("NaN"))
    local = datetime(2026, 1, 1, 2, tzinfo=RIGA)
    assert RawFrame(b"\x00", local, "x", "mbus").received_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert RawFrame(b"\x00", local, "x", "mbus").received_at.tzinfo is UTC
