"""Zenner water meters (ZRI version 0B, cold water) that put their registers after DIF 0F.

Layout from wmbusmeters drivers/src/zenner0b.xmq: after the manufacturer-data DIF 0F come a
32-bit status word, the volume at the last billing date and the total volume, both uint32 LE
in units of 1/256000 m3. The standard records before the 0F are decoded as usual.
"""

from __future__ import annotations

from decimal import Decimal

from decoders.hooks import HookInput, HookResult
from decoders.hooks.synth import manufacturer
from decoders.records import DIF_MANUFACTURER_DATA, parse_records
from decoders.telegram import DataRecord
from metergate.errors import DecodeError

# 1/256000 m3 = 5^8 / 10^11 m3, so the count scales exactly into decimal.
_PER_COUNT = 5**8
_EXPONENT = -11


def _volume(raw: bytes) -> Decimal:
    return Decimal(int.from_bytes(raw, "little") * _PER_COUNT).scaleb(_EXPONENT).normalize()


def zenner0b_records(data: bytes) -> tuple[DataRecord, ...]:
    """Records of the manufacturer data after DIF 0F; none when it is shorter than 12 bytes."""
    if len(data) < 12:
        return ()
    status, target, total = data[0:4], data[4:8], data[8:12]
    return (
        manufacturer(
            b"\x04\xff\x0b", status, "status", "", Decimal(int.from_bytes(status, "little"))
        ),
        # wmbusmeters names this one "target"; what date it belongs to is not verified.
        manufacturer(b"\x44\xff\x0c", target, "volume", "m3", _volume(target)),
        manufacturer(b"\x04\xff\x0d", total, "volume", "m3", _volume(total)),
    )


def zenner0b(hook: HookInput) -> HookResult:
    records = parse_records(hook.payload).records
    extra = tuple(
        derived
        for record in records
        if record.spec.dif == bytes((DIF_MANUFACTURER_DATA,))
        for derived in zenner0b_records(record.raw)
    )
    return HookResult(records + extra)


def encode_zenner0b(status: int, target_count: int, total_count: int) -> bytes:
    """The manufacturer data after DIF 0F (volumes in 1/256000 m3); for tests."""
    try:
        return b"".join(v.to_bytes(4, "little") for v in (status, target_count, total_count))
    except OverflowError:
        raise DecodeError("zenner0b registers are unsigned 32-bit") from None
