"""Modbus register maps (decoders/modbus_map.py): profiles, exact decoding, validation.

The register words of the order tests are written out by hand from the big-endian coding of
each value (ABCD) by swapping words (CDAB), bytes (BADC) or both (DCBA); the codings of 100.0
and 55.32 come from the float table of the Siemens SITRANS F M MAGFLO Modbus RTU manual
(SFIDK.PS.023.D2.02, appendix H).
"""

from __future__ import annotations

import struct
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import decoders
from decoders.modbus_map import (
    MAX_REGISTERS_PER_READ,
    TYPES,
    ReadBlock,
    RegisterField,
    RegisterMap,
    decode_registers,
    encode_registers,
    parse_register_map,
    plan_blocks,
    register_count,
    status_flags,
)
from metergate.errors import ConfigError, DecodeError

PROFILES = Path(decoders.__file__).parent / "profiles" / "modbus"
PROFILE_FILES = sorted(PROFILES.glob("*.toml"))


def make_field(name: str = "value", **kwargs: Any) -> RegisterField:
    kwargs.setdefault("address", 0)
    kwargs.setdefault("type", "u16")
    kwargs.setdefault("quantity", name)
    kwargs.setdefault("unit", "")
    return RegisterField(name=name, **kwargs)


def one_field_map(**kwargs: Any) -> RegisterMap:
    return RegisterMap("test", "generic", "", 1, (make_field(**kwargs),))


def decode_one(register_map: RegisterMap, words: list[int]) -> Decimal | None:
    item = register_map.fields[0]
    registers = {(item.table, item.address + i): word for i, word in enumerate(words)}
    (record,) = decode_registers(register_map, registers)
    assert record.spec.name == item.name
    assert record.raw == b"".join(word.to_bytes(2, "big") for word in words)
    assert record.value is None or isinstance(record.value, Decimal)
    return record.value


# Every profile's own vectors ----------------------------------------------------------------


def test_the_profile_folder_holds_the_two_water_meters() -> None:
    names = {path.name for path in PROFILE_FILES}
    assert {"generic_magmeter.toml", "generic_magmeter_low_word_first.toml"} <= names


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda path: path.stem)
def test_profile_vectors_decode_exactly(path: Path) -> None:
    register_map = parse_register_map(path.read_text(encoding="utf-8"), str(path))
    assert register_map.tests, "a profile carries its own test vectors"
    for number, vector in enumerate(register_map.tests):
        registers = dict(vector.registers)
        records = decode_registers(register_map, registers)
        got = {record.spec.name: record.value for record in records}
        assert got == dict(vector.expect), f"tests[{number}] ({vector.source})"
        for record, item in zip(records, register_map.fields, strict=True):
            assert (record.quantity, record.unit) == (item.quantity, item.unit)
        if vector.flags is not None:
            assert status_flags(register_map, records) == vector.flags, f"tests[{number}]"
        # The simulator's direction: the expected values encode back to the same registers.
        values = {name: value for name, value in vector.expect if value is not None}
        encoded = encode_registers(register_map, values)
        assert encoded == {key: registers[key] for key in encoded}
        assert len(encoded) == sum(
            item.count for item in register_map.fields if item.name in values
        )


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda path: path.stem)
def test_profile_blocks_read_exactly_the_registers_of_the_fields(path: Path) -> None:
    register_map = parse_register_map(path.read_text(encoding="utf-8"), str(path))
    read = [(b.table, b.start + i) for b in register_map.blocks for i in range(b.count)]
    needed = [(f.table, f.address + i) for f in register_map.fields for i in range(f.count)]
    assert sorted(read) == sorted(needed)
    assert all(1 <= b.count <= MAX_REGISTERS_PER_READ for b in register_map.blocks)


def test_magmeter_blocks() -> None:
    path = PROFILES / "generic_magmeter.toml"
    register_map = parse_register_map(path.read_text(encoding="utf-8"), str(path))
    assert register_map.blocks == (
        ReadBlock("holding", 3002, 2),
        ReadBlock("holding", 3014, 8),  # the two doubles touch: one request
        ReadBlock("holding", 3200, 4),
    )
    assert {block.function_code for block in register_map.blocks} == {3}


# Word and byte orders, every type ----------------------------------------------------------

ORDER_CASES = [
    # type, value, ABCD (big/big), CDAB (word little), BADC (byte little), DCBA (both little)
    ("u16", "4660", [0x1234], [0x1234], [0x3412], [0x3412]),
    ("i16", "-2", [0xFFFE], [0xFFFE], [0xFEFF], [0xFEFF]),
    (
        "u32",
        "305419896",  # 0x12345678
        [0x1234, 0x5678],
        [0x5678, 0x1234],
        [0x3412, 0x7856],
        [0x7856, 0x3412],
    ),
    (
        "i32",
        "-123456789",  # 0xF8A432EB
        [0xF8A4, 0x32EB],
        [0x32EB, 0xF8A4],
        [0xA4F8, 0xEB32],
        [0xEB32, 0xA4F8],
    ),
    (
        "u64",
        "72623859790382856",  # 0x0102030405060708
        [0x0102, 0x0304, 0x0506, 0x0708],
        [0x0708, 0x0506, 0x0304, 0x0102],
        [0x0201, 0x0403, 0x0605, 0x0807],
        [0x0807, 0x0605, 0x0403, 0x0201],
    ),
    (
        "i64",
        "-2",
        [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE],
        [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF],
        [0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF],
        [0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF],
    ),
    ("f32", "55.32", [0x425D, 0x47AE], [0x47AE, 0x425D], [0x5D42, 0xAE47], [0xAE47, 0x5D42]),
    ("f32", "100", [0x42C8, 0x0000], [0x0000, 0x42C8], [0xC842, 0x0000], [0x0000, 0xC842]),
    (
        "f64",
        "12345.678",  # 0x40C81CD6C8B43958
        [0x40C8, 0x1CD6, 0xC8B4, 0x3958],
        [0x3958, 0xC8B4, 0x1CD6, 0x40C8],
        [0xC840, 0xD61C, 0xB4C8, 0x5839],
        [0x5839, 0xB4C8, 0xD61C, 0xC840],
    ),
]
ORDERS = [("big", "big"), ("little", "big"), ("big", "little"), ("little", "little")]


@pytest.mark.parametrize(
    ("type_name", "value", "word_order", "byte_order", "words"),
    [
        (case[0], case[1], *orders, words)
        for case in ORDER_CASES
        for orders, words in zip(ORDERS, case[2:], strict=True)
    ],
)
def test_word_and_byte_orders(
    type_name: str, value: str, word_order: str, byte_order: str, words: list[int]
) -> None:
    register_map = one_field_map(
        type=type_name, address=40, word_order=word_order, byte_order=byte_order
    )
    assert decode_one(register_map, words) == Decimal(value)
    expected = {("holding", 40 + i): word for i, word in enumerate(words)}
    assert encode_registers(register_map, {"value": Decimal(value)}) == expected


def test_every_type_has_an_order_case() -> None:
    assert {case[0] for case in ORDER_CASES} == TYPES


# Exact values -------------------------------------------------------------------------------


def test_scale_and_offset_are_exact_beyond_28_digits() -> None:
    scale = "1.23456789012345678901234567890"
    register_map = one_field_map(type="u64", scale=Decimal(scale), offset=Decimal("0.5"))
    product = (2**64 - 1) * 123456789012345678901234567890  # the scale without its point
    with localcontext() as context:
        context.prec = 100  # the default 28 digits would round this 49-digit sum
        expected = Decimal(product).scaleb(-29) + Decimal("0.5")
    assert decode_one(register_map, [0xFFFF] * 4) == expected
    assert len(expected.as_tuple().digits) > 28


def test_offset_temperature_in_hundredths_of_a_kelvin() -> None:
    register_map = one_field_map(
        type="u16", scale=Decimal("0.01"), offset=Decimal("-273.15"), unit="C"
    )
    assert decode_one(register_map, [29315]) == Decimal("20.00")
    assert encode_registers(register_map, {"value": Decimal("-273.15")}) == {("holding", 0): 0}


def test_float_scale_uses_the_shortest_repr() -> None:
    # 0x3DCCCCCD is binary32 0.100000001490116...; the meter meant 0.1.
    register_map = one_field_map(type="f32", scale=Decimal("3600"))
    assert decode_one(register_map, [0x3DCC, 0xCCCD]) == Decimal("360")
    # binary64 0.1 (0x3FB999999999999A): repr is "0.1".
    register_map = one_field_map(type="f64", scale=Decimal("0.001"))
    assert decode_one(register_map, [0x3FB9, 0x9999, 0x9999, 0x999A]) == Decimal("0.0001")


@pytest.mark.parametrize(
    ("type_name", "words"),
    [
        ("f32", [0x7FC0, 0x0000]),  # quiet NaN
        ("f32", [0x7F80, 0x0000]),  # +inf
        ("f32", [0xFF80, 0x0000]),  # -inf
        ("f32", [0x7F80, 0x0001]),  # signalling NaN
        ("f64", [0x7FF8, 0, 0, 0]),
        ("f64", [0xFFF0, 0, 0, 0]),
    ],
)
def test_not_a_number_gives_none_and_spares_the_other_fields(
    type_name: str, words: list[int]
) -> None:
    fields = (
        make_field("flow", type=type_name, address=0),
        make_field("total", type="u16", address=10),
    )
    register_map = RegisterMap("test", "generic", "", 1, fields)
    registers = {("holding", i): word for i, word in enumerate(words)} | {("holding", 10): 7}
    flow, total = decode_registers(register_map, registers)
    assert flow.value is None
    assert total.value == Decimal(7)


def test_negative_zero_round_trips() -> None:
    register_map = one_field_map(type="f64")
    assert str(decode_one(register_map, [0x8000, 0, 0, 0])) == "-0.0"
    encoded = encode_registers(register_map, {"value": Decimal("-0.0")})
    assert encoded[("holding", 0)] == 0x8000


def test_nan_and_infinity_encode_for_the_simulator() -> None:
    register_map = one_field_map(type="f32")
    assert encode_registers(register_map, {"value": Decimal("NaN")}) == {
        ("holding", 0): 0x7FC0,
        ("holding", 1): 0x0000,
    }
    assert encode_registers(register_map, {"value": Decimal("-Infinity")})[("holding", 0)] == 0xFF80


# Errors while decoding and encoding ---------------------------------------------------------


def test_a_missing_register_names_the_field() -> None:
    register_map = one_field_map(name="forward_total", type="u32", address=100)
    with pytest.raises(DecodeError, match=r"forward_total: holding register 101"):
        decode_registers(register_map, {("holding", 100): 1})
    with pytest.raises(DecodeError, match="forward_total"):
        decode_registers(register_map, {("input", 100): 1, ("input", 101): 1})


@pytest.mark.parametrize("word", [-1, 0x10000, True, 1.0, "1", None])
def test_a_register_that_is_not_a_16_bit_word_names_the_field(word: object) -> None:
    register_map = one_field_map(name="flow", type="u16")
    with pytest.raises(DecodeError, match="flow"):
        decode_registers(register_map, {("holding", 0): word})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("type_name", "scale", "value", "message"),
    [
        ("u16", "1", "65536", "does not fit u16"),
        ("u16", "1", "-1", "does not fit u16"),
        ("i16", "1", "32768", "does not fit i16"),
        ("i16", "1", "-32769", "does not fit i16"),
        ("u32", "0.001", "4294967.296", "does not fit u32"),
        ("i32", "1", "2147483648", "does not fit i32"),
        ("u64", "1", "18446744073709551616", "does not fit u64"),
        ("i64", "1", "-9223372036854775809", "does not fit i64"),
        ("u32", "0.001", "1.0005", "not a multiple of 0.001"),
        ("u16", "1", "NaN", "does not fit u16"),
        ("i32", "1", "Infinity", "does not fit i32"),
        ("f32", "1", "3.5E+38", "does not fit f32"),
        ("f64", "1", "1E+309", "does not fit f64"),
        ("f64", "1", "1E+999999999", "does not fit f64"),
        ("u64", "1", "1E-999999999", "does not fit u64"),
    ],
)
def test_encode_rejects_what_the_type_cannot_hold(
    type_name: str, scale: str, value: str, message: str
) -> None:
    register_map = one_field_map(name="total", type=type_name, scale=Decimal(scale))
    with pytest.raises(DecodeError, match=f"total: .*{message}"):
        encode_registers(register_map, {"total": Decimal(value)})


def test_encode_rejects_an_unknown_field() -> None:
    with pytest.raises(DecodeError, match="no field 'flow'"):
        encode_registers(one_field_map(), {"flow": Decimal(1)})


# Blocks -------------------------------------------------------------------------------------


def test_blocks_merge_touching_fields_but_not_gaps_or_tables() -> None:
    fields = [
        make_field("a", address=10, type="u32"),
        make_field("b", address=12, type="f64"),
        make_field("c", address=17, type="u16"),  # a gap at 16: a new request
        make_field("d", address=12, type="u16", table="input"),
        make_field("e", address=11, type="u16", table="input"),
    ]
    assert plan_blocks(fields) == (
        ReadBlock("holding", 10, 6),
        ReadBlock("holding", 17, 1),
        ReadBlock("input", 11, 2),
    )
    assert [b.function_code for b in plan_blocks(fields)] == [3, 3, 4]


def test_blocks_stay_within_125_registers_and_never_split_a_field() -> None:
    u16s = [make_field(f"f{i}", address=i) for i in range(126)]
    assert plan_blocks(u16s) == (ReadBlock("holding", 0, 125), ReadBlock("holding", 125, 1))
    u32s = [make_field(f"f{i}", address=2 * i, type="u32") for i in range(70)]
    # 62 u32 fill 124 registers; the 63rd would straddle register 125.
    assert plan_blocks(u32s) == (ReadBlock("holding", 0, 124), ReadBlock("holding", 124, 16))


def test_status_flags_read_the_bits_of_the_named_field() -> None:
    path = PROFILES / "generic_magmeter.toml"
    register_map = parse_register_map(path.read_text(encoding="utf-8"), str(path))
    records = decode_registers(register_map, dict(register_map.tests[0].registers))
    patched = [
        r if r.spec.name != "alarms" else type(r)(r.spec, Decimal(0b1101), r.raw) for r in records
    ]
    assert status_flags(register_map, patched) == ("dry", "flow_above_max", "permanent_error")


# Validation: every error names the file and the key ----------------------------------------

BASE = """\
model = "test-meter"
manufacturer = "generic"
unit_id = 1

[[fields]]
name = "flow_rate"
address = 100
type = "f32"
scale = "3600"
quantity = "volume_flow"
unit = "m3/h"

[[fields]]
name = "alarms"
address = 102
type = "u16"
quantity = "error_flags"
unit = ""

[[flags]]
field = "alarms"
bit = 2
flag = "leak"

[[tests]]
source = "hand-computed"
flags = ["leak"]
[tests.holding]
100 = [0x3F80, 0x0000, 0x0004]
[tests.expect]
flow_rate = "3600"
alarms = "4"
"""
SOURCE = "profiles/modbus/test.toml"


def test_the_base_of_the_validation_cases_is_valid() -> None:
    register_map = parse_register_map(BASE, SOURCE)
    assert [item.name for item in register_map.fields] == ["flow_rate", "alarms"]
    assert register_map.blocks == (ReadBlock("holding", 100, 3),)
    records = decode_registers(register_map, dict(register_map.tests[0].registers))
    assert [record.value for record in records] == [Decimal(3600), Decimal(4)]


VALIDATION_CASES = [
    # (old text, new text, location, part of the message)
    ('type = "f32"', 'type = "f24"', "fields[0].type", "unknown type 'f24'"),
    ('name = "alarms"', 'name = "flow_rate"', "fields[1].name", "duplicate name"),
    ("address = 102", "address = 101", "fields[1].address", "overlaps the registers of"),
    ("address = 100", "address = 65536", "fields[0].address", "from 0 to 65535"),
    ("address = 100", "address = -1", "fields[0].address", "from 0 to 65535"),
    ("address = 100", "address = 65535", "fields[0].address", "runs past register 65535"),
    ("address = 100", 'address = "100"', "fields[0].address", "integer"),
    ("address = 100", "address = true", "fields[0].address", "integer"),
    ('type = "f32"', 'type = "f32"\ntable = "coil"', "fields[0].table", "unknown table"),
    ("unit_id = 1", 'unit_id = 1\ntable = "discrete"', "table", "unknown table"),
    ('type = "f32"', 'type = "f32"\nword_order = "middle"', "fields[0].word_order", "unknown"),
    ('type = "f32"', 'type = "f32"\nbyte_order = "swapped"', "fields[0].byte_order", "unknown"),
    ("unit_id = 1", 'unit_id = 1\nword_order = "BIG"', "word_order", "unknown word_order"),
    ('scale = "3600"', "scale = 0.001", "fields[0].scale", "as a string"),
    ('scale = "3600"', 'scale = "0,001"', "fields[0].scale", "not a decimal string"),
    ('scale = "3600"', 'scale = "NaN"', "fields[0].scale", "not a decimal string"),
    ('scale = "3600"', "scale = 1000", "fields[0].scale", "not a decimal string"),
    ('scale = "3600"', 'scale = "0"', "fields[0].scale", "must not be 0"),
    ('scale = "3600"', 'scale = "1E-40"', "fields[0].scale", "at most 30 digits"),
    ('type = "u16"', 'type = "u16"\noffset = 0.5', "fields[1].offset", "as a string"),
    ('quantity = "volume_flow"\n', "", "fields[0].quantity", "missing 'quantity'"),
    ('unit = "m3/h"\n', "", "fields[0].unit", "missing 'unit'"),
    ('unit = "m3/h"', 'unit = "l/h"', "fields[0].unit", "unknown unit"),
    ('quantity = "volume_flow"', 'quantity = "Volume Flow"', "fields[0].quantity", "snake_case"),
    ('quantity = "error_flags"', 'quantity = "volume_flow"', "fields[1].quantity", "same quantity"),
    ('scale = "3600"', 'scal = "3600"', "fields[0].scal", "unknown key 'scal'"),
    ("unit_id = 1", "unit_id = 1\nmodle = 'x'", "modle", "unknown key 'modle'"),
    ("unit_id = 1", "unit_id = 256", "unit_id", "from 0 to 255"),
    ('model = "test-meter"\n', "", "model", "missing 'model'"),
    ('manufacturer = "generic"', "manufacturer = 3", "manufacturer", "must be a string"),
    ("unit_id = 1", "unit_id = = 1", "line 3", "not valid TOML"),
    ('type = "f32"', 'type = "f32', "line 8", "not valid TOML"),
    ('type = "f32"', 'type = "f32"\nfunction = "average"', "fields[0].function", "unknown"),
    ('type = "f32"', 'type = "f32"\nstorage = -1', "fields[0].storage", "integer"),
    ('field = "alarms"', 'field = "flow_rate"', "flags[0].field", "not an unsigned integer"),
    ('field = "alarms"', 'field = "alarm"', "flags[0].field", "not an unsigned integer"),
    ("bit = 2", "bit = 16", "flags[0].bit", "from 0 to 15"),
    ('flag = "leak"', 'flag = "leaking"', "flags[0].flag", "unknown flag 'leaking'"),
    ('alarms = "4"', 'alarms = "4"\nflow = "1"', "tests[0].expect.flow", "no field named"),
    ('alarms = "4"\n', "", "tests[0].expect", "no expected value for 'alarms'"),
    ('alarms = "4"', "alarms = 4.0", "tests[0].expect.alarms", "as a string"),
    ("0x0004]", "0x10000]", "tests[0].holding.100", "16-bit register values"),
    ("100 = [", "x100 = [", "tests[0].holding.x100", "not a register address"),
    ('flags = ["leak"]', 'flags = ["leek"]', "tests[0].flags", "flag names"),
    ('source = "hand-computed"\n', "", "tests[0].source", "missing 'source'"),
    ('source = "hand-computed"', 'source = "x"\nregisters = 1', "tests[0].registers", "unknown"),
]


@pytest.mark.parametrize(("old", "new", "location", "message"), VALIDATION_CASES)
def test_every_validation_error_names_file_and_key(
    old: str, new: str, location: str, message: str
) -> None:
    assert old in BASE
    with pytest.raises(ConfigError) as caught:
        parse_register_map(BASE.replace(old, new, 1), SOURCE)
    error = caught.value
    assert (error.path, error.location) == (SOURCE, location)
    assert message in error.message
    assert str(error).startswith(f"{SOURCE}:{location}: ")


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ('model = "m"\nmanufacturer = "g"\n', "fields"),
        ('model = "m"\nmanufacturer = "g"\nfields = 3\n', "fields"),
        ('model = "m"\nmanufacturer = "g"\nfields = [3]\n', "fields[0]"),
    ],
)
def test_a_map_needs_field_tables(text: str, location: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_register_map(text, SOURCE)
    assert (caught.value.path, caught.value.location) == (SOURCE, location)


# Properties ---------------------------------------------------------------------------------

SCALES = ["1", "0.001", "0.01", "10", "3600", "1E-9", "0.5"]
OFFSETS = ["0", "-273.15", "1000"]


@st.composite
def integer_cases(draw: st.DrawFn) -> tuple[RegisterMap, Decimal]:
    type_name = draw(st.sampled_from(["u16", "i16", "u32", "i32", "u64", "i64"]))
    bits = 16 * register_count(type_name)
    low, high = (
        (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if type_name[0] == "i" else (0, 2**bits - 1)
    )
    raw = draw(st.integers(low, high))
    scale = Decimal(draw(st.sampled_from(SCALES)))
    offset = Decimal(draw(st.sampled_from(OFFSETS)))
    register_map = one_field_map(
        type=type_name,
        address=draw(st.integers(0, 0x10000 - bits // 16)),
        word_order=draw(st.sampled_from(["big", "little"])),
        byte_order=draw(st.sampled_from(["big", "little"])),
        scale=scale,
        offset=offset,
    )
    with localcontext() as context:
        context.prec = 60
        return register_map, Decimal(raw) * scale + offset


@given(integer_cases())
def test_integer_types_round_trip_exactly(case: tuple[RegisterMap, Decimal]) -> None:
    register_map, value = case
    registers = encode_registers(register_map, {"value": value})
    assert len(registers) == register_map.fields[0].count
    assert all(0 <= word <= 0xFFFF for word in registers.values())
    (record,) = decode_registers(register_map, registers)
    assert record.value == value


@given(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["big", "little"]),
    st.sampled_from(["big", "little"]),
)
def test_f64_round_trips_its_shortest_repr(number: float, word_order: str, byte_order: str) -> None:
    register_map = one_field_map(type="f64", word_order=word_order, byte_order=byte_order)
    value = Decimal(repr(number))
    (record,) = decode_registers(register_map, encode_registers(register_map, {"value": value}))
    assert record.value == value
    assert str(record.value) == str(value)


@given(
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.sampled_from(["big", "little"]),
    st.sampled_from(["big", "little"]),
)
def test_f32_round_trips_to_the_same_single(
    number: float, word_order: str, byte_order: str
) -> None:
    register_map = one_field_map(type="f32", word_order=word_order, byte_order=byte_order)
    registers = encode_registers(register_map, {"value": Decimal(repr(number))})
    (record,) = decode_registers(register_map, registers)
    assert isinstance(record.value, Decimal)
    assert struct.pack(">f", float(record.value)) == struct.pack(">f", number)
    assert len(record.value.as_tuple().digits) <= 9  # the shortest repr, not the double's


REGISTER_CASES = st.tuples(
    st.sampled_from(sorted(TYPES)),
    st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
    st.sampled_from(["big", "little"]),
    st.sampled_from(["big", "little"]),
    st.sampled_from(SCALES),
    st.sampled_from(OFFSETS),
)


@given(REGISTER_CASES)
def test_any_registers_decode_and_encode_back(
    case: tuple[str, list[int], str, str, str, str],
) -> None:
    type_name, words, word_order, byte_order, scale, offset = case
    register_map = one_field_map(
        type=type_name,
        word_order=word_order,
        byte_order=byte_order,
        scale=Decimal(scale),
        offset=Decimal(offset),
    )
    registers = {("holding", i): word for i, word in enumerate(words[: register_count(type_name)])}
    (record,) = decode_registers(register_map, registers)
    if record.value is None:
        return  # NaN payloads are many; encoding gives the one quiet NaN
    assert isinstance(record.value, Decimal)
    if type_name.startswith("f") and record.value == 0 and Decimal(offset):
        return  # zero's sign is lost when an offset is added, as in IEEE arithmetic
    assert encode_registers(register_map, {"value": record.value}) == registers


def one_field_decode(item: RegisterField, registers: dict[tuple[str, int], int]) -> object:
    register_map = RegisterMap("one", "generic", "", 1, (item,))
    (record,) = decode_registers(register_map, registers)
    return record.value


def all_types_map() -> RegisterMap:
    fields = tuple(
        make_field(
            f"v{i}",
            type=type_name,
            address=4 * i,
            table=("holding", "input")[i % 2],
            word_order=("big", "little")[i // 2 % 2],
            byte_order=("big", "little")[i // 4 % 2],
            scale=Decimal(SCALES[i % len(SCALES)]),
            offset=Decimal(OFFSETS[i % len(OFFSETS)]),
        )
        for i, type_name in enumerate(sorted(TYPES))
    )
    return RegisterMap("all", "generic", "", 1, fields)


MAPS = [all_types_map()] + [
    parse_register_map(path.read_text(encoding="utf-8"), str(path)) for path in PROFILE_FILES
]
ANY_WORD = st.one_of(
    st.integers(0, 0xFFFF),
    st.integers(-(2**70), 2**70),
    st.sampled_from([None, True, 1.5, "1", b"\x00\x01", Decimal(3)]),
)


@settings(max_examples=300)
@given(st.data())
def test_random_registers_raise_nothing_but_decode_error(data: st.DataObject) -> None:
    register_map = data.draw(st.sampled_from(MAPS))
    needed = [(f.table, f.address + i) for f in register_map.fields for i in range(f.count)]
    registers = {key: data.draw(ANY_WORD) for key in needed if data.draw(st.integers(0, 20)) != 0}
    try:
        records = decode_registers(register_map, registers)  # type: ignore[arg-type]
    except DecodeError:
        return
    assert len(records) == len(register_map.fields)
    status_flags(register_map, records)


@settings(max_examples=300)
@given(st.data())
def test_random_values_encode_or_raise_decode_error(data: st.DataObject) -> None:
    register_map = data.draw(st.sampled_from(MAPS))
    names = [item.name for item in register_map.fields]
    values = data.draw(
        st.dictionaries(
            st.sampled_from(names),
            st.decimals() | st.decimals(places=3) | st.integers().map(Decimal),
        )
    )
    try:
        registers = encode_registers(register_map, values)
    except DecodeError:
        return
    by_name = {item.name: item for item in register_map.fields}
    assert len(registers) == sum(by_name[name].count for name in values)
    assert all(0 <= word <= 0xFFFF for word in registers.values())
    for name, value in values.items():
        if by_name[name].type[0] in "ui":  # integers are exact both ways
            record = one_field_decode(by_name[name], registers)
            assert record == value
