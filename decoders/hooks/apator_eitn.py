"""Apator E-ITN 30 heat cost allocators (APA or APT, version 04, type 08).

Layout from wmbusmeters drivers/src/apatoreitn.xmq, restated in our words. The meter sends one
15-byte block of its own, either right after CI A0 (sometimes behind a repeated A0 byte), or
after CI B6 behind a count byte, that many bytes of unknown meaning and an A0 byte. The block
holds, all words uint16 LE:

- byte 0: the low byte of the heating-season start date (its high byte is always A0);
- bytes 1-2: not decoded;
- bytes 3-4: the consumption at the end of the previous season;
- bytes 5-6: the date the electronic seal was broken, 0 while it is intact;
- bytes 7-8: the consumption in this season;
- bytes 9-10: the meter's date;
- bytes 11-12 and 13-14: the mean room temperature of the previous and of this season, in
  1/256 C.

Dates are day bits 4-0, month bits 8-5 and year since 2000 in bits 13-9.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from decoders.datatypes import encode_date_g
from decoders.hooks import HookInput, HookResult
from decoders.hooks.synth import absent, counted, manufacturer, standard
from decoders.telegram import DataRecord
from metergate.errors import DecodeError, FrameError

CI_DIRECT = 0xA0
CI_PREFIXED = 0xB6
BLOCK_SIZE = 15
_MARKER = 0xA0
_SEASON_HIGH_BYTE = 0xA0
_PER_256 = Decimal("0.00390625")  # 1/256, exact in decimal


def _date(word: int) -> date | None:
    try:
        return date(2000 + ((word >> 9) & 0x1F), (word >> 5) & 0x0F, word & 0x1F)
    except ValueError:
        return None


def _block(ci: int, payload: bytes) -> bytes:
    """The 15-byte block inside a CI A0 or B6 payload."""
    if ci == CI_PREFIXED:
        if not payload:
            raise FrameError("E-ITN CI B6 payload is empty", offset=0)
        start = payload[0] + 1
        if len(payload) <= start or payload[start] != _MARKER:
            raise FrameError("E-ITN CI B6 payload lacks the A0 before its block", offset=start)
        payload = payload[start + 1 :]
    elif len(payload) > BLOCK_SIZE and payload[0] == _MARKER:
        payload = payload[1:]
    if len(payload) < BLOCK_SIZE:
        raise FrameError(f"E-ITN block of {len(payload)} bytes is too short", offset=0)
    return payload[:BLOCK_SIZE]


def _word(block: bytes, at: int) -> int:
    return int.from_bytes(block[at : at + 2], "little")


def _date_record(header: bytes, raw: bytes, quantity: str | None) -> DataRecord:
    day = _date(int.from_bytes(raw, "little"))
    if quantity is not None:
        return manufacturer(header, raw, quantity, "date", day)
    if day is None:
        return absent(header, raw)
    return standard(header, encode_date_g(day))


def _temperature(header: bytes, raw: bytes) -> DataRecord:
    value = int.from_bytes(raw, "little") * _PER_256
    return manufacturer(header, raw, "room_temperature_mean", "C", value)


def eitn_records(block: bytes) -> tuple[DataRecord, ...]:
    season = bytes((block[0], _SEASON_HIGH_BYTE))
    seal = block[5:7]
    return (
        counted(b"\x02\x6e", _word(block, 7), block[7:9]),
        counted(b"\x42\x6e", _word(block, 3), block[3:5]),
        _date_record(b"\x02\x6c", block[9:11], None),
        _date_record(b"\x02\xff\x01", season, "season_start_date"),
        _date_record(b"\x02\xff\x02", seal, "seal_broken_date"),
        _temperature(b"\x02\xff\x03", block[13:15]),
        _temperature(b"\x42\xff\x03", block[11:13]),
    )


def apatoreitn(hook: HookInput) -> HookResult | None:
    if hook.ci not in (CI_DIRECT, CI_PREFIXED):
        return None
    block = _block(hook.ci, hook.payload)
    seal_broken = _word(block, 5) != 0
    return HookResult(
        eitn_records(block), flags=frozenset({"tamper_before"} if seal_broken else ())
    )


def encode_eitn(
    *,
    season_low: int,
    previous: int,
    seal_broken: date | None,
    current: int,
    today: date,
    previous_mean_256: int,
    mean_256: int,
) -> bytes:
    """The 15-byte block (after CI A0); for tests."""

    def word(value: int) -> bytes:
        if not 0 <= value <= 0xFFFF:
            raise DecodeError(f"E-ITN word {value} does not fit 16 bits")
        return value.to_bytes(2, "little")

    def day_word(day: date | None) -> bytes:
        if day is None:
            return bytes(2)
        if not 2000 <= day.year <= 2031:
            raise DecodeError("E-ITN dates carry years 2000-2031")
        return word((day.year - 2000) << 9 | day.month << 5 | day.day)

    if not 0 <= season_low <= 0xFF:
        raise DecodeError("the season start is one byte")
    return (
        bytes((season_low,))
        + bytes(2)
        + word(previous)
        + day_word(seal_broken)
        + word(current)
        + day_word(today)
        + word(previous_mean_256)
        + word(mean_256)
    )
