"""Build data records from values: the inverse of decoders.records (EN 13757-3 §6).

The simulated meters and the property tests use it; a value that the record's coding cannot
carry exactly is refused rather than rounded. Every value that decoders.records produces codes
back to bytes that decode to the same value.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time
from decimal import Decimal

from decoders import datatypes as dt
from decoders.records import _BCD_FIELDS, _INT_FIELDS, EXACT, read_header
from decoders.telegram import RecordValue
from decoders.vif import VifMeaning
from metergate.errors import DecodeError

_MAX_LVAR_TEXT = 0xBF  # EN 13757-3 §6.3.3: LVAR 00-BF is text of that many bytes
_MAX_LVAR_BCD = 9  # LVAR C0-C9 / D0-D9


def _integral(value: Decimal, exponent: int, header_hex: str) -> int:
    if not value.is_finite():
        raise DecodeError(f"{value} is not a number for {header_hex}")
    scaled = value.scaleb(-exponent, EXACT)
    if scaled != scaled.to_integral_value():
        raise DecodeError(f"{value} is not a whole multiple of 1e{exponent} for {header_hex}")
    return int(scaled)


def _unscaled(value: Decimal, meaning: VifMeaning) -> Decimal:
    """The value in the VIF's own unit: undo a non-decimal factor (US gallons, cubic feet)."""
    return value if meaning.factor is None else EXACT.divide(value, meaning.factor)


def _hex_bytes(value: RecordValue, header_hex: str) -> bytes:
    if not isinstance(value, str):
        raise DecodeError(f"{header_hex} carries bytes, given as hex text, not {value!r}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise DecodeError(f"{value!r} is not hex for {header_hex}") from None


def _real32(value: Decimal, meaning: VifMeaning, header_hex: str) -> bytes:
    if not value.is_finite():
        raise DecodeError(f"{value} is not a number for {header_hex}")
    number = _unscaled(value, meaning).scaleb(-meaning.exponent, EXACT)
    coded = dt.encode_real32(number)
    if dt.decode_real32(coded) != number:
        raise DecodeError(f"{value} is not a single-precision number for {header_hex}")
    return coded


def _fixed(value: RecordValue, field: int, length: int, meaning: VifMeaning, hx: str) -> bytes:
    """The data of a record with a fixed length, coded as decoders.records decodes it."""
    if isinstance(value, datetime):
        if length == 6:
            return dt.encode_datetime_i(value)
        if length == 4:
            return dt.encode_datetime_f(value)
    elif isinstance(value, date):
        if length == 2:
            return dt.encode_date_g(value)
    elif isinstance(value, str):
        if meaning.kind in ("time", "datetime") and field == 0x3:
            try:
                return dt.encode_time_j(time.fromisoformat(value))
            except ValueError:
                raise DecodeError(f"{value!r} is not a time of day for {hx}") from None
        raw = _hex_bytes(value, hx)
        if len(raw) == length:
            return raw
    elif isinstance(value, Decimal):
        if meaning.kind == "number":
            if field == 0x5:
                return _real32(value, meaning, hx)
            number = _integral(_unscaled(value, meaning), meaning.exponent, hx)
            if field in _BCD_FIELDS:
                return dt.encode_bcd(number, length)
            if field in _INT_FIELDS:
                return dt.encode_int(number, length)
        elif field in _BCD_FIELDS:
            return dt.encode_bcd(_integral(value, 0, hx), length)
        elif field in _INT_FIELDS:
            return dt.encode_int(_integral(value, 0, hx), length, signed=False)
    raise DecodeError(f"{value!r} cannot be coded as the {length} data bytes of {hx}")


def _binary_lvar(length: int, header_hex: str) -> int:
    """The LVAR byte for `length` binary bytes (EN 13757-3 §6.3.3, Table 5)."""
    if length <= 0x0F:
        return 0xE0 + length
    if 16 <= length <= 32 and length % 4 == 0:
        return 0xEC + length // 4
    if length in (48, 64):
        return 0xF5 if length == 48 else 0xF6
    raise DecodeError(f"no LVAR codes {length} binary bytes for {header_hex}")


def _variable(value: RecordValue, meaning: VifMeaning, header_hex: str) -> bytes:
    """LVAR and data of a DIF-D record: text, binary (hex) or BCD, as the decoder reads them."""
    if isinstance(value, str) and meaning.kind == "binary":
        raw = _hex_bytes(value, header_hex)
        return bytes((_binary_lvar(len(raw), header_hex),)) + raw
    if isinstance(value, str):
        text = dt.encode_text(value)
        if len(text) > _MAX_LVAR_TEXT:
            raise DecodeError(f"text longer than {_MAX_LVAR_TEXT} bytes for {header_hex}")
        return bytes((len(text),)) + text
    if isinstance(value, Decimal) and meaning.kind == "number":
        number = _integral(_unscaled(value, meaning), meaning.exponent, header_hex)
        size = (len(str(abs(number))) + 1) // 2
        if size > _MAX_LVAR_BCD:
            raise DecodeError(f"{value} needs more than 18 BCD digits for {header_hex}")
        lvar = (0xC0 if number >= 0 else 0xD0) + size
        return bytes((lvar,)) + dt.encode_bcd(abs(number), size)
    raise DecodeError(f"{value!r} cannot be coded as variable-length data of {header_hex}")


def encode_record(header: bytes, value: RecordValue) -> bytes:
    """DIF/DIFE/VIF/VIFE bytes in `header`, followed by `value` coded as they say."""
    parsed = read_header(header, 0)
    if parsed is None or parsed.end != len(header):
        raise DecodeError(f"{header.hex()} is not exactly one record header")
    hx = header.hex()
    if parsed.length == -2:  # DIF 0F/1F: the maker's bytes up to the end of the payload
        return header + _hex_bytes(value, hx)
    if parsed.length == -1:
        return header + _variable(value, parsed.meaning, hx)
    if parsed.length == 0:
        return header
    return header + _fixed(value, parsed.spec.data_field, parsed.length, parsed.meaning, hx)


def encode_records(records: Iterable[tuple[bytes, RecordValue]]) -> bytes:
    return b"".join(encode_record(header, value) for header, value in records)
