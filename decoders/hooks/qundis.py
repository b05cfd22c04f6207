"""Qundis meters (QDS, and the LSE heat cost allocators of the same line): the registers inside
the walk-by record 0D FF 5F, and the link CRC that some of their frames keep at the end
(the MyQWater test telegram of wmbusmeters src/driver_qwater.cc and the HCA one of
src/driver_qcaloric.cc end in the format A CRC of their last block).

Layout from wmbusmeters src/driver_qwater.cc (qdsExtractWalkByField), drivers/src/qwaterv2.xmq
and drivers/src/qheatv2.xmq, in our words. The record (DIF 0D, VIF FF, VIFE 5F) carries 53 bytes
of LVAR content:

- bytes 0-8: not decoded (two 32-bit words and a byte), but byte 7 is 07 in every clear block
  seen (the test telegrams of wmbusmeters' qwater, qheat, qheatv2 and qcaloric drivers);
- byte 9: the VIF of every register below (13 litres, 05 100 Wh, 06 kWh, 0D 100 kJ, 0E MJ,
  6E HCA units);
- bytes 10-11: the date of the last error, type G (FFFF: none);
- bytes 12-15: the total, 8 BCD digits;
- bytes 16-17 and 18-21: the year-end billing date (type G) and the total then;
- bytes 22-23 and 24-27: the month-end date and the total then;
- bytes 28-51: twelve monthly consumptions, int16 LE, oldest first, the last one the month that
  ends on the month-end date (wmbusmeters' qheatv2 driver reports them as energy_delta_2 to
  energy_delta_13). It prints 8000 as -32768 units; we read it as a month without a value: it
  fills the months before a meter's first one;
- byte 52: 2F, a filler, in every clear block seen.

Q caloric 5.5 sends the block encrypted (wmbusmeters src/driver_qcaloric.cc, "HCA55"), where any
byte may look like a VIF; a block without the 07 and the 2F is left undecoded.

The registers come out as the records these meters send in their standard frames (0C13, 426C,
4C13, C2086C and CC0813 for water; the energy or HCA VIF in place of 13), so one profile names
both kinds of frame. The monthly consumptions are decoded for heat meters only, in the unit of
the VIF as qheatv2 reads them; no driver reads them for water meters or allocators, and neither
do we.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from decoders.crc import crc16_en13757
from decoders.hooks import HookInput, HookResult
from decoders.hooks.sent_tpl import sent_tpl
from decoders.hooks.synth import manufacturer, standard, storage_dif
from decoders.record_encoder import encode_record
from decoders.records import parse_records
from decoders.telegram import DataRecord
from decoders.vif import interpret_vif
from decoders.wmbus_link import FIRST_BLOCK
from metergate.errors import DecodeError, FrameError

WALK_BY_DIF = b"\x0d"
WALK_BY_VIF = b"\xff\x5f"
WALK_BY_SIZE = 53
MONTHS = 12
NO_VALUE = -0x8000
_MARK_AT = 7
_MARK = 0x07
_END = 0x2F
_VIF_AT = 9
_MONTHLY_AT = 28
_FORMAT_A_BLOCK = 16  # EN 13757-4 format A: 16 data bytes per block after the first
_NO_DATE = b"\xff\xff"
_MONTHLY_TAG = b"\xff\x01"  # manufacturer-specific VIF (EN 13757-3 §6.4.1) for the consumptions
_LAST_ENERGY_VIF = 0x0F  # 00-07 energy in Wh, 08-0F in J (EN 13757-3 Table 10)
_LAST_VOLUME_VIF = 0x17
_HCA_VIF = 0x6E


def _register_headers(vif: int) -> tuple[bytes, ...]:
    """Headers of the six registers, in block order: error date, total, year-end date and total,
    month-end date and total (storage 1 the year end, 17 the month end, as in the standard
    frames)."""
    v = bytes((vif,))
    return (b"\x32\x6c", b"\x0c" + v, b"\x42\x6c", b"\x4c" + v, b"\xc2\x08\x6c", b"\xcc\x08" + v)


_REGISTER_SLICES = (
    slice(10, 12),
    slice(12, 16),
    slice(16, 18),
    slice(18, 22),
    slice(22, 24),
    slice(24, 28),
)


def _known_vif(vif: int) -> bool:
    return vif <= _LAST_VOLUME_VIF or vif == _HCA_VIF


def _monthly(raw: bytes, vif: int) -> list[DataRecord]:
    meaning = interpret_vif(vif, b"")
    records = []
    for index in range(MONTHS):
        chunk = raw[2 * index : 2 * index + 2]
        count = int.from_bytes(chunk, "little", signed=True)
        value = None if count == NO_VALUE else Decimal(count).scaleb(meaning.exponent)
        # Storage n: the n-th last month, 1 for the month that ends on the month-end date.
        header = storage_dif(0x02, MONTHS - index) + _MONTHLY_TAG
        records.append(manufacturer(header, chunk, "monthly_energy", meaning.unit, value))
    return records


def _clear_block(content: bytes) -> bool:
    return (
        len(content) == WALK_BY_SIZE
        and content[_MARK_AT] == _MARK
        and content[-1] == _END
        and _known_vif(content[_VIF_AT])
    )


def walk_by_records(content: bytes) -> tuple[DataRecord, ...]:
    """Records of the content of a 0D FF 5F record; none for another size, an unknown VIF or a
    block that does not look clear."""
    if not _clear_block(content):
        return ()
    vif = content[_VIF_AT]
    records = [
        standard(header, content[where])
        for header, where in zip(_register_headers(vif), _REGISTER_SLICES, strict=True)
    ]
    if vif <= _LAST_ENERGY_VIF:
        records.extend(_monthly(content[_MONTHLY_AT : _MONTHLY_AT + 2 * MONTHS], vif))
    return tuple(records)


def without_stray_crc(frame: bytes, payload: bytes) -> bytes | None:
    """The payload without its last 2 bytes when they are the link CRC of the frame's last
    format A block (EN 13757-4; PROTOCOL_NOTES §1.4: sent high byte first), left in by a
    receiver that stripped all the others; None when they are not."""
    body = len(frame) - 2
    if body <= FIRST_BLOCK or len(payload) < 2 or payload[-2:] != frame[-2:]:
        return None
    start = FIRST_BLOCK + (body - FIRST_BLOCK - 1) // _FORMAT_A_BLOCK * _FORMAT_A_BLOCK
    if crc16_en13757(frame[start:body]) != int.from_bytes(frame[body:], "big"):
        return None
    return payload[:-2]


def _records(hook: HookInput) -> tuple[DataRecord, ...]:
    """The payload's records. When they end in bytes no record explains (the parser's tail
    record, without a DIF) or fail there, and the frame's last 2 bytes are a link CRC, the
    records of the payload without it."""
    try:
        records = parse_records(hook.payload).records
    except FrameError:
        trimmed = without_stray_crc(hook.frame, hook.payload)
        if trimmed is None:
            raise
        return parse_records(trimmed).records
    if records and not records[-1].spec.dif:
        trimmed = without_stray_crc(hook.frame, hook.payload)
        if trimmed is not None:
            return parse_records(trimmed).records
    return records


def qundis(hook: HookInput) -> HookResult | None:
    header = sent_tpl(hook)
    if header is not None and header.manufacturer_specific:
        return None  # no Qundis scrambling is known: the decoder refuses the frame
    records = _records(hook)
    extra = tuple(
        derived
        for record in records
        if record.spec.dif == WALK_BY_DIF and record.spec.vif == WALK_BY_VIF
        for derived in walk_by_records(record.raw)
    )
    return HookResult(records + extra)


def _data(header: bytes, value: Decimal | date | None) -> bytes:
    if value is None:
        return _NO_DATE
    return encode_record(header, value)[len(header) :]


def encode_walk_by(
    vif: int,
    total: Decimal,
    year_end: tuple[date | None, Decimal],
    month_end: tuple[date | None, Decimal],
    *,
    error_date: date | None = None,
    monthly: Sequence[int | None] = (None,) * MONTHS,
    head: bytes = bytes(_MARK_AT) + bytes((_MARK, 0)),
) -> bytes:
    """The 53 bytes of a 0D FF 5F record's content; register values in the VIF's unit (m3,
    Wh, J or HCA units), monthly consumptions as counts of it (None for no value)."""
    if len(head) != _VIF_AT or head[_MARK_AT] != _MARK:
        raise DecodeError("a walk-by block starts with 9 bytes, the eighth 07")
    if len(monthly) != MONTHS or not _known_vif(vif):
        raise DecodeError("a walk-by block has a known VIF and 12 months")
    values = (error_date, total, year_end[0], year_end[1], month_end[0], month_end[1])
    body = b"".join(
        _data(header, value) for header, value in zip(_register_headers(vif), values, strict=True)
    )
    months = b"".join(_month_bytes(count) for count in monthly)
    return head + bytes((vif,)) + body + months + bytes((_END,))


def walk_by_record(content: bytes) -> bytes:
    """The whole record around a block's content. Qundis sends the length as a text LVAR (35),
    which decoders.record_encoder keeps for text, so the record is put together here."""
    if len(content) != WALK_BY_SIZE:
        raise DecodeError(f"a walk-by block has {WALK_BY_SIZE} bytes, not {len(content)}")
    return WALK_BY_DIF + WALK_BY_VIF + bytes((WALK_BY_SIZE,)) + content


def _month_bytes(count: int | None) -> bytes:
    if count is None:
        count = NO_VALUE
    elif not NO_VALUE < count < -NO_VALUE:
        raise DecodeError(f"a monthly consumption of {count} does not fit int16 short of 8000")
    return count.to_bytes(2, "little", signed=True)
