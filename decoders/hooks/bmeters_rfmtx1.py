"""B METERS RFM-TX1 water meter radio modules (BMT version 05, type 07): the scrambled total.

Layout from wmbusmeters src/driver_rfmtx1.cc, in our words. These frames have a short TPL
header (CI 7A) with the configuration word 1006: security mode 16, the maker's own (EN 13757-7
Table 19). The first 6 bytes of the payload are XORed with the access number and with one of
16 six-byte masks, chosen by the access number's low nibble. Unscrambled they are an ordinary
record: 0C 13 and the total volume in litres as 8 BCD digits. The reference reads only the
digits; that the two bytes before them come out as 0C 13 is our check that the unscrambling
worked. Payload bytes 13-18 are the meter's clock in clear, BCD seconds, minutes, hours, day,
month and year in the century. The 7 bytes between the record and the clock, and the twelve
3-byte values after the clock, are not decoded.

A frame of these meters with another configuration word, or stored already in clear (2F2F
first), goes to the generic decoder.
"""

from __future__ import annotations

from datetime import datetime

from decoders.datatypes import decode_bcd, encode_bcd
from decoders.hooks import HookInput, HookResult
from decoders.hooks.sent_tpl import CI_TPL_SHORT, sent_tpl
from decoders.hooks.synth import manufacturer, standard
from decoders.security import MARKER
from decoders.telegram import DataRecord, SecurityInfo
from metergate.errors import DecodeError, DecryptionError, FrameError

SCRAMBLED_CONFIG = 0x1006
SCRAMBLED_MODE = 16
TOTAL_HEADER = b"\x0c\x13"  # EN 13757-3: 8-digit BCD, volume in litres
RECORD_SIZE = 6
CLOCK = slice(13, 19)
_CLOCK_HEADER = b"\x06\xff\x01"  # manufacturer-specific VIF (EN 13757-3 §6.4.1), 6 data bytes

# The masks, as wmbusmeters lists them (decode_vectors_), indexed by the access number's low
# nibble.
_MASKS = tuple(
    bytes.fromhex(mask)
    for mask in (
        "75967a101a0a",
        "5b7f70132213",
        "b318b90b8e99",
        "8e7d79074a16",
        "b591079acb69",
        "b8a332a1390e",
        "bd809c7e6099",
        "275cb4c480a3",
        "30d00ace1903",
        "c24cf005a586",
        "544b1698115e",
        "4bee0cc97da2",
        "87ca4a48e41f",
        "c487772e8ae8",
        "e330bd78578c",
        "a49a396f2805",
    )
)


def scramble(data: bytes, access_no: int) -> bytes:
    """XOR the first 6 bytes with the access number and its mask; its own inverse."""
    if len(data) != RECORD_SIZE or not 0 <= access_no <= 0xFF:
        raise DecodeError("RFM-TX1 scrambles 6 bytes with a one-byte access number")
    mask = _MASKS[access_no & 0x0F]
    return bytes(byte ^ access_no ^ key for byte, key in zip(data, mask, strict=True))


def _clock(raw: bytes) -> datetime | None:
    fields = [decode_bcd(raw[i : i + 1]) for i in range(len(raw))]
    if any(value is None for value in fields):
        return None
    second, minute, hour, day, month, year = (int(value or 0) for value in fields)
    try:
        return datetime(2000 + year, month, day, hour, minute, second)
    except ValueError:
        return None


def rfmtx1_records(payload: bytes, access_no: int) -> tuple[DataRecord, ...]:
    """The total and the clock of a scrambled payload (the bytes after the TPL header)."""
    if len(payload) < CLOCK.stop:
        raise FrameError(
            f"RFM-TX1 payload needs {CLOCK.stop} bytes for its total and clock",
            offset=len(payload),
            data=payload,
        )
    record = scramble(payload[:RECORD_SIZE], access_no)
    if record[:2] != TOTAL_HEADER:
        raise DecryptionError(
            f"RFM-TX1 total unscrambled to header {record[:2].hex()}, not 0c13", data=payload
        )
    clock = payload[CLOCK]
    return (
        standard(TOTAL_HEADER, record[2:]),
        manufacturer(_CLOCK_HEADER, clock, "datetime", "datetime", _clock(clock)),
    )


def rfmtx1(hook: HookInput) -> HookResult | None:
    header = sent_tpl(hook)
    if hook.ci != CI_TPL_SHORT or header is None or header.config != SCRAMBLED_CONFIG:
        return None
    if hook.payload.startswith(MARKER):
        return None  # stored already in clear: the envelope reads it as an ordinary payload
    return HookResult(
        rfmtx1_records(hook.payload, header.access_no),
        security=SecurityInfo(mode=SCRAMBLED_MODE, encrypted=True, decrypted=True),
    )


def encode_rfmtx1(
    access_no: int,
    total_litres: int,
    clock: datetime,
    *,
    middle: bytes = bytes(7),
    tail: bytes = bytes(37),
) -> bytes:
    """A scrambled payload (what follows the TPL header); for tests."""
    if len(middle) != CLOCK.start - RECORD_SIZE or not 2000 <= clock.year <= 2099:
        raise DecodeError("RFM-TX1 has 7 bytes before its clock and years 2000-2099")
    fields = (clock.second, clock.minute, clock.hour, clock.day, clock.month, clock.year % 100)
    clock_raw = b"".join(encode_bcd(field, 1) for field in fields)
    if total_litres < 0:
        raise DecodeError(f"a total of {total_litres} litres is negative")
    record = TOTAL_HEADER + encode_bcd(total_litres, 4)
    return scramble(record, access_no) + middle + clock_raw + tail
