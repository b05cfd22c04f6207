"""Data records made by hooks from proprietary payloads.

A proprietary payload carries values without DIF/VIF bytes. A hook gives each value the header
an EN 13757-3 meter would send for it (`04 13` for a volume in litres, `42 6C` for a stored
date), so that the value, its unit and its storage number come out exactly as the generic
decoder would read them, and profiles can name them by header. A value that no standard VIF can
carry (a battery life in half-years, a volume in 1/256000 m3) gets a manufacturer-specific VIF
(`FF` and a VIFE tag of the hook's choosing, EN 13757-3 §6.4.1) with the quantity and unit the
hook states.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from decoders.records import DATA_LENGTHS, MAX_EXTENSIONS, Header, read_header
from decoders.telegram import DataRecord, RecordValue
from metergate.errors import DecodeError


def _header(header: bytes) -> Header:
    parsed = read_header(header, 0)
    if parsed is None or parsed.end != len(header):
        raise DecodeError(f"{header.hex()} is not exactly one record header")
    return parsed


def storage_dif(data_field: int, storage: int) -> bytes:
    """DIF and DIFEs for a storage number (EN 13757-3 §6.3.2: DIF bit 6, then 4 bits a DIFE)."""
    if not 0 <= data_field <= 0x0F or storage < 0:
        raise DecodeError(f"no DIF for data field {data_field} and storage {storage}")
    dif = data_field | (storage & 1) << 6
    rest = storage >> 1
    difes = bytearray()
    while rest:
        difes.append(rest & 0x0F)
        rest >>= 4
    if len(difes) > MAX_EXTENSIONS:
        raise DecodeError(f"storage {storage} needs more than {MAX_EXTENSIONS} DIFEs")
    if not difes:
        return bytes((dif,))
    for i in range(len(difes) - 1):
        difes[i] |= 0x80
    return bytes((dif | 0x80,)) + bytes(difes)


def standard(header: bytes, raw: bytes) -> DataRecord:
    """The record the generic decoder reads from `header` followed by `raw`."""
    parsed = _header(header)
    if DATA_LENGTHS[parsed.spec.data_field] != len(raw):
        raise DecodeError(f"{header.hex()} needs {parsed.length} data bytes, not {len(raw)}")
    return DataRecord(parsed.spec, parsed.convert(raw), raw)


def counted(header: bytes, number: int, raw: bytes) -> DataRecord:
    """An unsigned count in the unit and power of ten that `header`'s VIF gives.

    Proprietary counters are unsigned where a standard integer record would be signed. `raw` is
    the bytes the count was read or derived from, whatever their number.
    """
    parsed = _header(header)
    return DataRecord(parsed.spec, Decimal(number).scaleb(parsed.spec.exponent), raw)


def absent(header: bytes, raw: bytes) -> DataRecord:
    """A record whose data the meter marks as not available."""
    return DataRecord(_header(header).spec, None, raw)


def manufacturer(
    header: bytes, raw: bytes, quantity: str, unit: str, value: RecordValue
) -> DataRecord:
    """A value with a manufacturer-specific VIF, its quantity and unit stated by the hook."""
    parsed = _header(header)
    spec = replace(parsed.spec, quantity=quantity, unit=unit, exponent=0)
    return DataRecord(spec, value, raw)
