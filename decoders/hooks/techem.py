"""Techem radio water meters (TCH) with the manufacturer-specific CI A2.

Layouts from wmbusmeters drivers/src/mkradio3a.xmq and drivers/src/mkradio4.xmq, in our words;
offsets count from the byte after the CI:

- version 50 ("MK Radio 3a"): bytes 2-3 the current date (day bits 4-0, month 8-5, year since
  2000 from bit 9), bytes 4-6 the total volume in 0.1 m3 (uint24 LE); the monthly history after
  it is not decoded.
- versions 70 and 95 ("MK Radio 4"): bytes 3-4 the volume at the start of the billing period
  and bytes 7-8 the volume since then, both in 0.1 m3 (uint16 LE); the total is their sum.

Other CIs of these meters are standard and go to the generic record parser.
"""

from __future__ import annotations

from datetime import date

from decoders.hooks import HookInput, HookResult
from decoders.hooks.synth import counted, manufacturer
from decoders.records import parse_records
from decoders.telegram import DataRecord
from metergate.errors import FrameError, UnsupportedError

CI_TECHEM = 0xA2
MK_RADIO_3A = frozenset({0x50})
MK_RADIO_4 = frozenset({0x70, 0x95})


def _date(raw: bytes) -> date | None:
    word = int.from_bytes(raw, "little")
    try:
        return date(2000 + (word >> 9), (word >> 5) & 0x0F, word & 0x1F)
    except ValueError:
        return None


def mkradio3a_records(payload: bytes) -> tuple[DataRecord, ...]:
    if len(payload) < 7:
        raise FrameError("MK Radio 3a payload too short for its total", offset=len(payload))
    return (
        counted(b"\x03\x15", int.from_bytes(payload[4:7], "little"), payload[4:7]),
        manufacturer(b"\x02\xff\x01", payload[2:4], "date", "date", _date(payload[2:4])),
    )


def mkradio4_records(payload: bytes) -> tuple[DataRecord, ...]:
    if len(payload) < 9:
        raise FrameError("MK Radio 4 payload too short for its volumes", offset=len(payload))
    previous = int.from_bytes(payload[3:5], "little")
    current = int.from_bytes(payload[7:9], "little")
    return (
        counted(b"\x04\x15", previous + current, payload[3:5] + payload[7:9]),
        counted(b"\x42\x15", previous, payload[3:5]),
    )


def techem_mkradio(hook: HookInput) -> HookResult:
    if hook.ci != CI_TECHEM:
        return HookResult(parse_records(hook.payload).records)
    version = hook.address.version
    if version in MK_RADIO_3A:
        return HookResult(mkradio3a_records(hook.payload))
    if version in MK_RADIO_4:
        return HookResult(mkradio4_records(hook.payload))
    raise UnsupportedError(f"Techem CI A2 payload of version {version:02x} is not decoded")


def encode_mkradio3a(day: date, total_tenths: int, history: bytes = bytes(36)) -> bytes:
    """The bytes after CI A2 of a version-50 frame; for tests."""
    if not 2000 <= day.year <= 2127 or not 0 <= total_tenths <= 0xFFFFFF:
        raise UnsupportedError("MK Radio 3a counts years 2000-2127 and 24-bit totals")
    word = (day.year - 2000) << 9 | day.month << 5 | day.day
    return bytes(2) + word.to_bytes(2, "little") + total_tenths.to_bytes(3, "little") + history


def encode_mkradio4(previous_tenths: int, current_tenths: int) -> bytes:
    """The bytes after CI A2 of a version-70/95 frame; for tests."""
    if not (0 <= previous_tenths <= 0xFFFF and 0 <= current_tenths <= 0xFFFF):
        raise UnsupportedError("MK Radio 4 volumes are 16-bit counts of 0.1 m3")
    return (
        bytes(3)
        + previous_tenths.to_bytes(2, "little")
        + bytes(2)
        + current_tenths.to_bytes(2, "little")
        + bytes(16)
    )
