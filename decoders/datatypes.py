"""Data types of the application layer: EN 13757-3 Annex A (types A, B, F, G, H, I, J, K) and
the variable-length data of §6.3.3 (LVAR).

Every decoder takes the data bytes exactly as sent (least significant byte first) and returns an
exact value. Invalid data (a BCD nibble A-E, a date flagged invalid) gives None, never a guess.
"""

from __future__ import annotations

import math
import struct
from datetime import date, datetime, time
from decimal import Decimal

from metergate.errors import DecodeError

_REAL32 = struct.Struct("<f")
_SMALLEST_NORMAL_REAL32 = 2.0**-126


def decode_int(raw: bytes, exponent: int = 0) -> Decimal:
    """Type B, signed binary integer (two's complement)."""
    value = int.from_bytes(raw, "little", signed=True)
    return Decimal(value).scaleb(exponent) if exponent else Decimal(value)


def decode_uint(raw: bytes) -> int:
    """Type C, unsigned binary (bit fields, counters declared unsigned)."""
    return int.from_bytes(raw, "little")


def encode_int(value: int, length: int, *, signed: bool = True) -> bytes:
    """Type B (signed) or type C (unsigned); a value outside the type's range is refused."""
    try:
        return value.to_bytes(length, "little", signed=signed)
    except OverflowError:
        kind = "signed" if signed else "unsigned"
        raise DecodeError(f"{value} does not fit in {length} {kind} bytes") from None


def decode_bcd(raw: bytes, exponent: int = 0) -> Decimal | None:
    """Type A, BCD, least significant byte first.

    A high nibble F in the most significant digit marks a negative value (EN 13757-3 Annex A,
    note to type A). Other nibbles A-F are invalid and give None, and so do no digits at all.
    """
    if not raw:
        return None
    digits = raw[::-1].hex()
    negative = digits[0] == "f"
    if negative:
        digits = digits[1:]
    if not digits.isdigit():
        return None
    value = int(digits)
    result = Decimal(-value if negative else value)
    return result.scaleb(exponent) if exponent else result


def encode_bcd(value: int, length: int) -> bytes:
    digits = 2 * length
    if value < 0:
        text = str(-value).rjust(digits - 1, "0")
        if len(text) > digits - 1:
            raise DecodeError(f"{value} does not fit in {digits} BCD digits")
        text = "f" + text
    else:
        text = str(value).rjust(digits, "0")
        if len(text) > digits:
            raise DecodeError(f"{value} does not fit in {digits} BCD digits")
    return bytes.fromhex(text)[::-1]


def decode_real32(raw: bytes) -> Decimal | None:
    """Type H, IEEE 754 single precision.

    The value is the shortest decimal that reads back as the same single-precision number
    (at most 9 significant digits do), which is what the meter meant by it; the double's repr
    would add digits the meter never had (34.19408416748047 for 34.194084). A normal number
    has at least 7 significant digits of precision, so a shorter decimal, if one exists, is the
    6-digit rounding with its trailing zeros dropped; subnormals have fewer and start lower.
    """
    (number,) = _REAL32.unpack(raw)
    if not math.isfinite(number):
        return None
    first = 6 if abs(number) >= _SMALLEST_NORMAL_REAL32 else 1
    for digits in range(first, 10):
        text = f"{number:.{digits}g}"
        if _REAL32.unpack(_REAL32.pack(float(text)))[0] == number:
            break
    return Decimal(text)


def encode_real32(value: Decimal) -> bytes:
    try:
        return _REAL32.pack(float(value))
    except OverflowError:
        raise DecodeError(f"{value} is beyond single precision") from None


def _century_year(year_low: int, year_high: int) -> int | None:
    """A two-digit year; 81-99 are 19xx and 00-80 are 20xx, as [LMB] maps them for old meters.

    The 7 bits could say 100-127, which no two-digit year is: invalid, not 2000-2027.
    """
    year = (year_high << 3) | year_low
    if year > 99:
        return None
    return 2000 + year if year < 81 else 1900 + year


def _two_digit_year(value: date, first: int = 1981, last: int = 2080) -> int:
    if not first <= value.year <= last:
        raise DecodeError(f"year {value.year} is outside {first}-{last}, all this type can carry")
    return value.year % 100


def decode_date_g(raw: bytes) -> date | None:
    """Type G, date: day 4-0, year-low 7-5, month 11-8, year-high 15-12 (EN 13757-3 A.7)."""
    word = raw[0] | raw[1] << 8
    day = word & 0x1F
    month = (word >> 8) & 0x0F
    year_low = (word >> 5) & 0x07
    year_high = (word >> 12) & 0x0F
    year = _century_year(year_low, year_high)
    if year is None:
        return None
    try:
        return date(year, month, day)
    except ValueError:
        return None  # 0 or 1F/15 fields: "no date", or every bit set for "not available"


def encode_date_g(value: date) -> bytes:
    year = _two_digit_year(value)
    word = value.day | (year & 0x07) << 5 | value.month << 8 | (year >> 3) << 12
    return word.to_bytes(2, "little")


def decode_datetime_f(raw: bytes) -> datetime | None:
    """Type F, date and time to the minute (EN 13757-3 A.6).

    Bit 7 of the first byte is IV, time invalid; bit 15 marks summer time, which does not
    change the wall-clock value the meter shows.
    """
    word = int.from_bytes(raw[:4], "little")
    if word & 0x80:
        return None
    minute = word & 0x3F
    hour = (word >> 8) & 0x1F
    hundred_year = (word >> 13) & 0x03
    day = (word >> 16) & 0x1F
    year_low = (word >> 21) & 0x07
    month = (word >> 24) & 0x0F
    year_high = (word >> 28) & 0x0F
    year = _century_year(year_low, year_high)
    if year is None:
        return None
    if hundred_year:  # year = 1900 + 100 * HY + YY; HY 0 keeps the 19xx/20xx reading
        year = 1900 + 100 * hundred_year + year % 100
    try:
        return datetime(year, month, day, hour, minute)
    except ValueError:
        return None


def encode_datetime_f(value: datetime) -> bytes:
    """Year = 1900 + 100 * HY + YY as the standard codes it (2020 has HY 1, as meters send).

    1900-1980 cannot be sent: HY 0 with YY 00-80 is read as 20xx for old meters.
    """
    if value.second or value.microsecond:
        raise DecodeError(f"{value} has seconds, which type F cannot carry")
    year = _two_digit_year(value, last=2299)
    hundred_year = (value.year - 1900) // 100
    word = (
        value.minute
        | value.hour << 8
        | hundred_year << 13
        | value.day << 16
        | (year & 0x07) << 21
        | value.month << 24
        | (year >> 3) << 28
    )
    return word.to_bytes(4, "little")


def decode_datetime_i(raw: bytes) -> datetime | None:
    """Type I, date and time to the second (EN 13757-3 A.10).

    byte0 second, byte1 minute (bit 7 IV), byte2 hour (7-5 weekday), byte3 day and year-low,
    byte4 month and year-high, byte5 week number.
    """
    if raw[1] & 0x80:
        return None
    second = raw[0] & 0x3F
    minute = raw[1] & 0x3F
    hour = raw[2] & 0x1F
    day = raw[3] & 0x1F
    year_low = raw[3] >> 5
    month = raw[4] & 0x0F
    year_high = raw[4] >> 4
    year = _century_year(year_low, year_high)
    if year is None:
        return None
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def encode_datetime_i(value: datetime) -> bytes:
    if value.microsecond:
        raise DecodeError(f"{value} has fractions of a second, which type I cannot carry")
    year = _two_digit_year(value)
    weekday = value.isoweekday()
    return bytes(
        (
            value.second,
            value.minute,
            value.hour | weekday << 5,
            value.day | (year & 0x07) << 5,
            value.month | (year >> 3) << 4,
            value.isocalendar().week,
        )
    )


def decode_time_j(raw: bytes) -> time | None:
    """Type J, time of day: second, minute and hour in the low bits of bytes 0, 1, 2."""
    try:
        return time(raw[2] & 0x1F, raw[1] & 0x3F, raw[0] & 0x3F)
    except ValueError:
        return None


def encode_time_j(value: time) -> bytes:
    if value.microsecond:
        raise DecodeError(f"{value} has fractions of a second, which type J cannot carry")
    return bytes((value.second, value.minute, value.hour))


def decode_dst_k(raw: bytes) -> str:
    """Type K, daylight saving rules (EN 13757-3 A.11), kept as its hex digits.

    The field layout could not be verified from a public source, so it is not interpreted.
    """
    return raw.hex()


def decode_text(raw: bytes) -> str:
    """LVAR text and plain-text units are sent last character first (EN 13757-3 §6.3.3)."""
    return raw[::-1].decode("latin-1")


def encode_text(text: str) -> bytes:
    try:
        return text.encode("latin-1")[::-1]
    except UnicodeEncodeError:
        raise DecodeError(f"text {text!r} is not Latin-1") from None


def lvar_length(lvar: int) -> tuple[int, str]:
    """Bytes that follow an LVAR byte and what they hold (EN 13757-3 §6.3.3, Table 5).

    C0-C9 / D0-D9: the standard counts (LVAR-C0)*2 digits, i.e. LVAR-C0 bytes.
    """
    if lvar <= 0xBF:
        return lvar, "text"
    if lvar <= 0xC9:
        return lvar - 0xC0, "bcd"
    if 0xD0 <= lvar <= 0xD9:
        return lvar - 0xD0, "negative_bcd"
    if 0xE0 <= lvar <= 0xEF:
        return lvar - 0xE0, "binary"
    if 0xF0 <= lvar <= 0xF4:
        return 4 * (lvar - 0xEC), "binary"
    if lvar == 0xF5:
        return 48, "binary"
    if lvar == 0xF6:
        return 64, "binary"
    raise DecodeError(f"reserved LVAR {lvar:02x}")
