"""EN 13757-3 Annex A data types and LVAR lengths (decoders.datatypes).

Fixed vectors come from PROTOCOL_NOTES.md section 7.7-7.9 (say which at each test); the property
tests check decode(encode(x)) == x for every type that has an encoder.
"""

from __future__ import annotations

import math
import struct
from datetime import date, datetime, time
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders import datatypes as dt
from metergate.errors import DecodeError

# Type G, F and I carry a two-digit year; F adds a hundred-year field (PROTOCOL_NOTES 7.8).
TWO_DIGIT_YEARS = st.integers(min_value=1981, max_value=2080)
HUNDRED_YEAR_YEARS = st.integers(min_value=1981, max_value=2299)


# --- type A, BCD (PROTOCOL_NOTES 7.9) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "exponent", "expected"),
    [
        ("78563412", 0, "12345678"),  # LE: least significant byte first
        ("45230100", -3, "12.345"),
        ("00", 0, "0"),
        ("000000", -3, "0.000"),
        ("99", 2, "9900"),
        ("563412f0", 0, "-123456"),  # F in the most significant digit: negative
        ("21f3", 0, "-321"),
        ("0100000000f1", -2, "-100000000.01"),
    ],
)
def test_bcd_decodes(raw: str, exponent: int, expected: str) -> None:
    value = dt.decode_bcd(bytes.fromhex(raw), exponent)
    assert value == Decimal(expected)
    assert isinstance(value, Decimal)


@pytest.mark.parametrize(
    "raw",
    [
        "0a",  # A in the low digit
        "a0",  # A in the most significant digit is not the sign
        "1e00",
        "123b",
        "ff",  # the sign nibble alone is not a number
        "1f",  # F anywhere but the most significant digit
        "f1f0",
        "cdab",
    ],
)
def test_bcd_invalid_nibbles_give_none(raw: str) -> None:
    assert dt.decode_bcd(bytes.fromhex(raw)) is None


def test_bcd_without_digits_gives_none() -> None:
    assert dt.decode_bcd(b"") is None


@settings(max_examples=300)
@given(st.integers(min_value=1, max_value=8), st.data())
def test_bcd_round_trip(length: int, data: st.DataObject) -> None:
    digits = 2 * length
    value = data.draw(st.integers(min_value=-(10 ** (digits - 1) - 1), max_value=10**digits - 1))
    raw = dt.encode_bcd(value, length)
    assert len(raw) == length
    assert dt.decode_bcd(raw) == value


@pytest.mark.parametrize(("value", "length"), [(100, 1), (-10, 1), (10**12, 6), (-(10**11), 6)])
def test_bcd_refuses_values_that_do_not_fit(value: int, length: int) -> None:
    with pytest.raises(DecodeError):
        dt.encode_bcd(value, length)


# --- type B, signed integers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("7f", 127),
        ("80", -128),
        ("ff", -1),
        ("0080", -32768),
        ("ffff7f", 8388607),
        ("000080", -8388608),
        ("08190000", 6408),  # Kamstrup volume of PROTOCOL_NOTES 6.2
        ("ffffffff", -1),
        ("000000000080", -(2**47)),
        ("ffffffffff7f", 2**47 - 1),
        ("0000000000000080", -(2**63)),
        ("ffffffffffffff7f", 2**63 - 1),
    ],
)
def test_signed_int_decodes(raw: str, expected: int) -> None:
    assert dt.decode_int(bytes.fromhex(raw)) == expected


def test_signed_int_exponent_is_exact() -> None:
    assert dt.decode_int(bytes.fromhex("6a000000"), -3) == Decimal("0.106")
    assert str(dt.decode_int(bytes.fromhex("00000000"), -3)) == "0.000"
    assert dt.decode_int(bytes.fromhex("05"), 2) == 500


@settings(max_examples=300)
@given(st.sampled_from([1, 2, 3, 4, 6, 8]), st.data())
def test_signed_int_round_trip(length: int, data: st.DataObject) -> None:
    bits = 8 * length
    value = data.draw(st.integers(min_value=-(2 ** (bits - 1)), max_value=2 ** (bits - 1) - 1))
    raw = dt.encode_int(value, length)
    assert len(raw) == length
    assert dt.decode_int(raw) == value


@pytest.mark.parametrize(("value", "length"), [(128, 1), (-129, 1), (2**47, 6), (2**63, 8)])
def test_signed_int_refuses_values_that_do_not_fit(value: int, length: int) -> None:
    with pytest.raises(DecodeError):
        dt.encode_int(value, length)


def test_unsigned_int_range() -> None:
    assert dt.encode_int(255, 1, signed=False) == b"\xff"
    assert dt.decode_uint(b"\xff") == 255
    with pytest.raises(DecodeError):
        dt.encode_int(-1, 1, signed=False)


# --- type H, real32 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (34.194084, "34.194084"),  # the double's repr would be 34.19408416748047
        (0.1, "0.1"),
        (1.0, "1"),
        (-2.5, "-2.5"),
        (16777216.0, "16777216"),
        (3.4028234663852886e38, "3.4028235E+38"),  # the largest
        (1e-45, "1E-45"),  # the smallest subnormal
    ],
)
def test_real32_is_the_shortest_decimal(number: float, expected: str) -> None:
    assert dt.decode_real32(struct.pack("<f", number)) == Decimal(expected)
    assert str(dt.decode_real32(struct.pack("<f", number))) == expected


@pytest.mark.parametrize("raw", ["0000c07f", "0000807f", "000080ff", "ffffffff"])
def test_real32_nan_and_infinity_give_none(raw: str) -> None:
    assert dt.decode_real32(bytes.fromhex(raw)) is None


def _packs_to(text: str, raw: bytes) -> bool:
    try:
        return struct.pack("<f", float(text)) == raw
    except OverflowError:  # rounded past the largest single-precision number
        return False


@settings(max_examples=500)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_real32_round_trip(number: float) -> None:
    raw = struct.pack("<f", number)
    value = dt.decode_real32(raw)
    assert value is not None
    # the decimal reads back as the same single-precision number, and no shorter one does
    assert struct.pack("<f", float(value)) == raw
    assert dt.encode_real32(value) == raw
    for digits in range(1, len(value.normalize().as_tuple().digits)):
        assert not _packs_to(f"{number:.{digits}g}", raw)


def test_real32_refuses_what_single_precision_cannot_hold() -> None:
    with pytest.raises(DecodeError):
        dt.encode_real32(Decimal("1e39"))


# --- type G, date (PROTOCOL_NOTES 7.8) ----------------------------------------------------------


def test_date_g_worked_example() -> None:
    # PROTOCOL_NOTES 7.8: `FF 0C` = 2007-12-31
    assert dt.decode_date_g(bytes.fromhex("ff0c")) == date(2007, 12, 31)


@pytest.mark.parametrize(
    "raw",
    [
        "0000",  # "no date" (PROTOCOL_NOTES 7.8: treat all-zero as invalid)
        "ffff",  # every bit set: not available
        "1f0d",  # month 13
        "3f02",  # 31 February of year 1
        "e1f4",  # year 127: a two-digit year cannot exceed 99
    ],
)
def test_date_g_invalid_gives_none(raw: str) -> None:
    assert dt.decode_date_g(bytes.fromhex(raw)) is None


@settings(max_examples=300)
@given(st.dates(min_value=date(1981, 1, 1), max_value=date(2080, 12, 31)))
def test_date_g_round_trip(value: date) -> None:
    raw = dt.encode_date_g(value)
    assert len(raw) == 2
    assert dt.decode_date_g(raw) == value


@pytest.mark.parametrize("value", [date(1980, 12, 31), date(2081, 1, 1)])
def test_date_g_refuses_years_it_cannot_carry(value: date) -> None:
    with pytest.raises(DecodeError):
        dt.encode_date_g(value)


# --- type F, date and time to the minute (PROTOCOL_NOTES 7.8) -----------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("32371f15", datetime(2008, 5, 31, 23, 50)),  # PROTOCOL_NOTES 7.8
        ("282a9e27", datetime(2020, 7, 30, 10, 40)),  # PROTOCOL_NOTES 3 and 7.8 (waterstarm)
        ("28aa9e27", datetime(2020, 7, 30, 10, 40)),  # bit 15, summer time: same wall clock
    ],
)
def test_datetime_f_worked_examples(raw: str, expected: datetime) -> None:
    assert dt.decode_datetime_f(bytes.fromhex(raw)) == expected


def test_datetime_f_encodes_as_meters_send_it() -> None:
    # PROTOCOL_NOTES 7.8: both examples carry hundred-year 1 for 20xx
    assert dt.encode_datetime_f(datetime(2008, 5, 31, 23, 50)) == bytes.fromhex("32371f15")
    assert dt.encode_datetime_f(datetime(2020, 7, 30, 10, 40)) == bytes.fromhex("282a9e27")


def test_datetime_f_century() -> None:
    # hundred-year 0 and year >= 81 is 19xx; hundred-year 2 is 21xx (PROTOCOL_NOTES 7.8)
    raw_1985 = (1 << 16 | (85 & 7) << 21 | 7 << 24 | (85 >> 3) << 28).to_bytes(4, "little")
    assert dt.decode_datetime_f(raw_1985) == datetime(1985, 7, 1)
    raw_2105 = (1 << 16 | 2 << 13 | 5 << 21 | 3 << 24).to_bytes(4, "little")
    assert dt.decode_datetime_f(raw_2105) == datetime(2105, 3, 1)


@pytest.mark.parametrize(
    "raw",
    [
        "b2371f15",  # the example with IV (bit 7) set
        "80000000",
        "3c371f15",  # minute 60
        "32381f15",  # hour 24
        "32371f1d",  # month 13
        "00000000",  # day 0
        "3237fff5",  # year 127
    ],
)
def test_datetime_f_invalid_gives_none(raw: str) -> None:
    assert dt.decode_datetime_f(bytes.fromhex(raw)) is None


@settings(max_examples=300)
@given(
    st.datetimes(min_value=datetime(1981, 1, 1), max_value=datetime(2299, 12, 31, 23, 59)).map(
        lambda moment: moment.replace(second=0, microsecond=0)
    )
)
def test_datetime_f_round_trip(value: datetime) -> None:
    raw = dt.encode_datetime_f(value)
    assert len(raw) == 4
    assert dt.decode_datetime_f(raw) == value


@pytest.mark.parametrize(
    "value",
    [
        datetime(1980, 12, 31, 23, 59),
        datetime(2300, 1, 1),
        datetime(2020, 7, 30, 10, 40, 5),  # type F has no seconds: refused, not truncated
    ],
)
def test_datetime_f_refuses_what_it_cannot_carry(value: datetime) -> None:
    with pytest.raises(DecodeError):
        dt.encode_datetime_f(value)


# --- type I, date and time to the second (PROTOCOL_NOTES 7.8) -----------------------------------


def test_datetime_i_worked_example() -> None:
    # PROTOCOL_NOTES 7.8, libmbus LGB_G350: `00 00 08 16 27 00` = 2016-07-22 08:00:00
    assert dt.decode_datetime_i(bytes.fromhex("000008162700")) == datetime(2016, 7, 22, 8)


@pytest.mark.parametrize(
    "raw",
    [
        "008008162700",  # byte 1 bit 7: IV
        "3c0008162700",  # second 60
        "000018162700",  # hour 24
        "0000080f2d00",  # month 13
        "000008f0f700",  # year 127
    ],
)
def test_datetime_i_invalid_gives_none(raw: str) -> None:
    assert dt.decode_datetime_i(bytes.fromhex(raw)) is None


@settings(max_examples=300)
@given(
    st.datetimes(min_value=datetime(1981, 1, 1), max_value=datetime(2080, 12, 31, 23, 59, 59)).map(
        lambda moment: moment.replace(microsecond=0)
    )
)
def test_datetime_i_round_trip(value: datetime) -> None:
    raw = dt.encode_datetime_i(value)
    assert len(raw) == 6
    assert raw[2] >> 5 == value.isoweekday()
    assert dt.decode_datetime_i(raw) == value


@pytest.mark.parametrize(
    "value", [datetime(2081, 1, 1), datetime(1980, 1, 1), datetime(2020, 1, 1, 0, 0, 0, 5)]
)
def test_datetime_i_refuses_what_it_cannot_carry(value: datetime) -> None:
    with pytest.raises(DecodeError):
        dt.encode_datetime_i(value)


# --- type J, time of day ------------------------------------------------------------------------


def test_time_j() -> None:
    assert dt.decode_time_j(bytes.fromhex("050a17")) == time(23, 10, 5)
    assert dt.decode_time_j(bytes.fromhex("000018")) is None  # hour 24
    assert dt.decode_time_j(bytes.fromhex("3c0000")) is None  # second 60


@settings(max_examples=200)
@given(st.times().map(lambda moment: moment.replace(microsecond=0)))
def test_time_j_round_trip(value: time) -> None:
    raw = dt.encode_time_j(value)
    assert len(raw) == 3
    assert dt.decode_time_j(raw) == value


# --- LVAR and text (PROTOCOL_NOTES 7.6, 7.7) ----------------------------------------------------


@pytest.mark.parametrize(
    ("lvar", "expected"),
    [
        (0x00, (0, "text")),
        (0x0A, (10, "text")),
        (0xBF, (191, "text")),
        (0xC0, (0, "bcd")),
        (0xC9, (9, "bcd")),
        (0xD0, (0, "negative_bcd")),
        (0xD9, (9, "negative_bcd")),
        (0xE0, (0, "binary")),
        (0xEF, (15, "binary")),
        (0xF0, (16, "binary")),  # 4 * (F0 - EC)
        (0xF1, (20, "binary")),
        (0xF2, (24, "binary")),
        (0xF3, (28, "binary")),
        (0xF4, (32, "binary")),
        (0xF5, (48, "binary")),
        (0xF6, (64, "binary")),
    ],
)
def test_lvar_lengths(lvar: int, expected: tuple[int, str]) -> None:
    assert dt.lvar_length(lvar) == expected


@pytest.mark.parametrize("lvar", [*range(0xF7, 0x100), *range(0xCA, 0xD0), *range(0xDA, 0xE0)])
def test_lvar_reserved_raises(lvar: int) -> None:
    with pytest.raises(DecodeError):
        dt.lvar_length(lvar)


def test_text_is_sent_last_character_first() -> None:
    # PROTOCOL_NOTES 7.6, Itron Cyble: `454C4259432054534554` reversed = "TEST CYBLE"
    assert dt.decode_text(bytes.fromhex("454c4259432054534554")) == "TEST CYBLE"
    assert dt.encode_text("TEST CYBLE") == bytes.fromhex("454c4259432054534554")


@settings(max_examples=200)
@given(st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=40))
def test_text_round_trip(text: str) -> None:
    assert dt.decode_text(dt.encode_text(text)) == text


def test_text_outside_latin_1_is_refused() -> None:
    with pytest.raises(DecodeError):
        dt.encode_text("€")


def test_real32_shortest_repr_never_uses_more_than_nine_digits() -> None:
    # every float32 reads back from 9 significant digits, so the search always ends
    worst = struct.pack("<f", math.pi)
    value = dt.decode_real32(worst)
    assert value is not None
    assert len(value.as_tuple().digits) <= 9
