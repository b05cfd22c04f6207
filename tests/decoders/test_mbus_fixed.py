"""The fixed data structure (CI 73/77): decoding, the unit table, the encoder."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders.mbus_fixed import (
    FIXED_MEDIA,
    STATUS_BINARY,
    STATUS_STORED,
    UNIT_HISTORIC,
    counter_steps,
    encode_fixed,
    fixed_unit,
    parse_fixed,
)
from decoders.mbus_link import LongFrame, parse_frame, rsp_ud
from metergate.errors import DecodeError, FrameError, UnsupportedError

# M-Bus documentation rev. 4.8, p. 35 (fixed data structure example), as quoted with its decoded
# values in the README of dev-lab/tmbus: ID 12345678, access number 10, water, counter 1 = 1 l,
# counter 2 = 135 l as a historic value (unit code 3E). Checksum 3C recomputed here.
DOC_FRAME = bytes.fromhex("68131368080573785634120A00E97E01000000350100003C16")


def doc_data() -> bytes:
    frame = parse_frame(DOC_FRAME)
    assert isinstance(frame, LongFrame)
    assert (frame.c, frame.a, frame.ci) == (0x08, 5, 0x73)
    return frame.data


def test_documentation_example() -> None:
    fixed = parse_fixed(doc_data())
    assert (fixed.id, fixed.access_no, fixed.status) == ("12345678", 10, 0)
    assert (fixed.medium, fixed.medium_name, fixed.device_type) == (7, "water", 7)
    first, second = fixed.records
    assert (first.quantity, first.unit, first.value) == ("volume", "m3", Decimal("0.001"))
    assert (first.storage, first.function, first.spec.vif, first.spec.dif) == (
        0,
        "instantaneous",
        b"\x29",
        b"",
    )
    assert first.raw == bytes.fromhex("01000000")
    assert (second.quantity, second.unit, second.value) == ("volume", "m3", Decimal("0.135"))
    assert (second.storage, second.spec.vif) == (1, bytes((UNIT_HISTORIC,)))


def test_encoder_reproduces_the_example() -> None:
    data = encode_fixed(
        "12345678",
        access_no=10,
        status=0,
        medium=7,
        unit_1=0x29,
        counter_1=1,
        unit_2=UNIT_HISTORIC,
        counter_2=135,
    )
    assert data == doc_data()
    assert rsp_ud(5, 0x73, data) == DOC_FRAME


@pytest.mark.parametrize(
    ("code", "quantity", "unit", "exponent"),
    [
        (0x02, "energy", "Wh", 0),
        (0x05, "energy", "Wh", 3),  # kWh
        (0x0A, "energy", "Wh", 8),  # 100 MWh
        (0x0B, "energy", "J", 3),  # kJ
        (0x0D, "energy", "J", 5),  # 100 kJ (libmbus's code calls it MJ)
        (0x0E, "energy", "J", 6),  # MJ (libmbus's code calls it 100 kJ)
        (0x13, "energy", "J", 11),  # 100 GJ
        (0x14, "power", "W", 0),
        (0x1C, "power", "W", 8),  # 100 MW
        (0x1D, "power", "J/h", 3),  # kJ/h
        (0x25, "power", "J/h", 11),  # 100 GJ/h
        (0x26, "volume", "m3", -6),  # ml
        (0x29, "volume", "m3", -3),  # l
        (0x2C, "volume", "m3", 0),
        (0x2E, "volume", "m3", 2),  # 100 m3
        (0x2F, "volume_flow", "m3/h", -6),  # ml/h
        (0x32, "volume_flow", "m3/h", -3),  # l/h
        (0x35, "volume_flow", "m3/h", 0),
        (0x37, "volume_flow", "m3/h", 2),
        (0x38, "temperature", "C", -3),
        (0x39, "hca", "hca", 0),
        (0x3A, "reserved_unit_3a", "", 0),
        (0x3F, "dimensionless", "", 0),
    ],
)
def test_unit_table(code: int, quantity: str, unit: str, exponent: int) -> None:
    meaning = fixed_unit(code)
    assert (meaning.quantity, meaning.unit, meaning.exponent) == (quantity, unit, exponent)


def fixed(**fields: Any) -> bytes:
    values: dict[str, Any] = {
        "access_no": 1,
        "status": 0,
        "medium": 7,
        "unit_1": 0x2C,
        "counter_1": 1234,
        "unit_2": 0x2C,
        "counter_2": 99,
    }
    values.update(fields)
    return encode_fixed("00001234", **values)


def test_binary_counters() -> None:
    data = fixed(status=STATUS_BINARY, counter_1=123456789, counter_2=-5, unit_1=0x05)
    assert data[8:12] == (123456789).to_bytes(4, "little")
    first, second = parse_fixed(data).records
    assert (first.quantity, first.unit, first.value) == ("energy", "Wh", Decimal("123456789E3"))
    assert first.spec.data_field == 0x4
    assert second.value == Decimal(-5)


def test_bcd_counters() -> None:
    data = fixed(counter_1=12345678)
    assert data[8:12] == bytes.fromhex("78563412")
    first, _ = parse_fixed(data).records
    assert first.value == Decimal(12345678)
    assert first.spec.data_field == 0xC


def test_stored_status_marks_both_counters() -> None:
    records = parse_fixed(fixed(status=STATUS_STORED)).records
    assert [record.storage for record in records] == [1, 1]
    records = parse_fixed(fixed(status=0)).records
    assert [record.storage for record in records] == [0, 0]


def test_invalid_bcd_gives_no_value() -> None:
    data = bytearray(fixed())
    data[8] = 0x1A
    first, second = parse_fixed(bytes(data)).records
    assert first.value is None
    assert second.value == Decimal(99)


def test_time_and_date_units_keep_their_bytes() -> None:
    first, second = parse_fixed(fixed(unit_1=0x00, counter_1=123456, unit_2=0x01)).records
    assert (first.quantity, first.value) == ("time_hms", "56341200")
    assert (second.quantity, second.value) == ("date_dmy", "99000000")


@pytest.mark.parametrize("medium", [m for m in range(16) if m not in range(0x0A, 0x0F)])
def test_media(medium: int) -> None:
    decoded = parse_fixed(fixed(medium=medium))
    assert decoded.medium == medium
    assert decoded.medium_name == FIXED_MEDIA[medium]
    assert decoded.records[0].spec.vif == b"\x2c"  # the medium bits do not leak into the unit


@pytest.mark.parametrize("medium", range(0x0A, 0x0F))
def test_mode_2_media(medium: int) -> None:
    with pytest.raises(UnsupportedError):
        parse_fixed(fixed(medium=medium))
    data = fixed(medium=medium, msb_first=True, status=STATUS_BINARY, counter_1=0x01020304)
    assert data[8:12] == bytes.fromhex("01020304")
    assert data[0:4] == bytes.fromhex("00001234")
    decoded = parse_fixed(data, msb_first=True)
    assert decoded.id == "00001234"
    assert decoded.records[0].value == Decimal(0x01020304)
    assert decoded.device_type == {0xA: 3, 0xB: 4, 0xC: 6, 0xD: 7, 0xE: 8}[medium]


def test_reserved_media_have_no_device_type() -> None:
    assert parse_fixed(fixed(medium=9)).device_type is None
    assert parse_fixed(fixed(medium=0xF)).device_type is None


@pytest.mark.parametrize("length", [0, 1, 15, 17, 30])
def test_wrong_length(length: int) -> None:
    with pytest.raises(FrameError):
        parse_fixed(bytes(length))


@pytest.mark.parametrize(
    "fields",
    [{"medium": 16}, {"unit_1": 0x40}, {"access_no": 256}, {"counter_1": 10**8}],
)
def test_encoder_checks_its_arguments(fields: dict[str, int]) -> None:
    with pytest.raises(DecodeError):
        fixed(**fields)


def test_counter_steps() -> None:
    assert counter_steps(Decimal("12.345"), 0x29) == 12345
    assert counter_steps(Decimal("1.5E6"), 0x05) == 1500  # kWh
    with pytest.raises(DecodeError):
        counter_steps(Decimal("0.0005"), 0x29)


@given(st.binary(min_size=16, max_size=16), st.booleans())
def test_random_bytes_raise_only_decode_errors(data: bytes, msb_first: bool) -> None:
    try:
        decoded = parse_fixed(data, msb_first=msb_first)
    except DecodeError:
        return
    assert len(decoded.records) == 2
    assert b"".join(record.raw for record in decoded.records) == data[8:]


@given(
    ident=st.integers(0, 99_999_999).map(lambda n: f"{n:08d}"),
    access_no=st.integers(0, 255),
    status=st.integers(0, 255),
    medium=st.integers(0, 15),
    unit_1=st.integers(0x02, 0x3F),
    unit_2=st.integers(0x02, 0x3F),
    counters=st.tuples(st.integers(0, 99_999_999), st.integers(0, 99_999_999)),
    msb_first=st.booleans(),
)
def test_encode_parse_round_trip(
    *,
    ident: str,
    access_no: int,
    status: int,
    medium: int,
    unit_1: int,
    unit_2: int,
    counters: tuple[int, int],
    msb_first: bool,
) -> None:
    data = encode_fixed(
        ident,
        access_no=access_no,
        status=status,
        medium=medium,
        unit_1=unit_1,
        counter_1=counters[0],
        unit_2=unit_2,
        counter_2=counters[1],
        msb_first=msb_first,
    )
    if medium in range(0x0A, 0x0F) and not msb_first:
        with pytest.raises(UnsupportedError):
            parse_fixed(data)
        return
    decoded = parse_fixed(data, msb_first=msb_first)
    assert (decoded.id, decoded.access_no, decoded.status, decoded.medium) == (
        ident,
        access_no,
        status,
        medium,
    )
    stored = 1 if status & STATUS_STORED else 0
    first, second = decoded.records
    assert first.storage == stored
    assert second.storage == (1 if unit_2 == UNIT_HISTORIC else stored)
    for record, code, counter in zip(decoded.records, (unit_1, unit_2), counters, strict=True):
        assert record.spec.vif == bytes((code,))
        shown = unit_1 if code == UNIT_HISTORIC and record is second else code
        assert record.unit == fixed_unit(shown).unit
        assert isinstance(record.value, Decimal)
        assert counter_steps(record.value, shown) == counter


def test_status_bits_follow_the_mbus_documentation() -> None:
    # Bit 0: binary counters, bit 1: stored at a fixed date (M-Bus documentation, fixed data
    # structure, as read by tmbus and m-bus-parser). Bits 7 and 6, which libmbus tests, change
    # nothing here.
    counters = bytes.fromhex("1000000020000000")
    header = bytes.fromhex("78563412") + b"\x01"
    units = bytes.fromhex("2C2C")  # m3 and m3, medium 0
    for status, values, storages in (
        (0x00, [Decimal(10), Decimal(20)], [0, 0]),
        (0x01, [Decimal(16), Decimal(32)], [0, 0]),
        (0x02, [Decimal(10), Decimal(20)], [1, 1]),
        (0xC0, [Decimal(10), Decimal(20)], [0, 0]),
    ):
        records = parse_fixed(header + bytes((status,)) + units + counters).records
        assert [record.value for record in records] == values
        assert [record.storage for record in records] == storages
