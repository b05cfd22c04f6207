"""BFW 240 Radio heat cost allocators (BFW, version 02, type 08): a proprietary payload behind
an ordinary short TPL header (CI 7A, no encryption).

Layout from wmbusmeters src/driver_bfw240radio.cc, restated in our words. The payload after
the TPL header is 40 bytes; offsets count from its start, which is the 2F2F filler pair:

- bytes 4-5: the consumption at the end of the previous billing period, uint16 big-endian;
- bytes 6-7: the consumption so far in this billing period, uint16 big-endian;
- bytes 10-36: eighteen monthly values of 12 bits each, packed backwards from byte 36, one
  month ago first. Each pair of months shares three bytes: the first takes the last byte as its
  low byte and the low nibble of the middle byte as its high nibble, the second the first byte
  as its low byte and the high nibble of the middle byte as its high nibble;
- bytes 37-39: the date of sending as BCD day, month, year (2000-2099).

Bytes 2-3 and 8-9 are not documented publicly and are not decoded.
"""

from __future__ import annotations

from datetime import date

from decoders.datatypes import encode_date_g
from decoders.hooks import HookInput, HookResult
from decoders.hooks.synth import absent, counted, standard, storage_dif
from decoders.telegram import DataRecord
from metergate.errors import DecodeError, FrameError

CI_SHORT_TPL = 0x7A
PAYLOAD_SIZE = 40
MONTHS = 18
_FILLER = b"\x2f\x2f"
_HISTORY_END = 36  # the byte holding the low byte of the newest monthly value
_HCA_VIF = 0x6E  # EN 13757-3 Table 10: units for heat cost allocation

# Storage 1 is the value at the billing date (the EN 13757-3 convention); the monthly values
# follow it at storage 2-19, one month further back per step.
STORAGE_BILLING = 1
STORAGE_FIRST_MONTH = 2


def _nibble_slot(month: int) -> tuple[int, int, bool]:
    """(index of the low byte, index of the byte with the high nibble, high nibble is the
    upper one) of monthly value `month`, 0 being one month ago."""
    offset, odd = divmod(month * 12, 8)
    if odd:
        return _HISTORY_END - 1 - offset, _HISTORY_END - offset, True
    return _HISTORY_END - offset, _HISTORY_END - 1 - offset, False


def monthly_values(payload: bytes) -> tuple[int, ...]:
    """The eighteen 12-bit monthly values, one month ago first."""
    if len(payload) < PAYLOAD_SIZE:
        raise FrameError("BFW 240 payload too short for its history", offset=len(payload))
    values = []
    for month in range(MONTHS):
        low, high, upper = _nibble_slot(month)
        nibble = payload[high] >> 4 if upper else payload[high] & 0x0F
        values.append(nibble << 8 | payload[low])
    return tuple(values)


def _bcd(byte: int) -> int | None:
    high, low = byte >> 4, byte & 0x0F
    return high * 10 + low if high <= 9 and low <= 9 else None


def _sent_on(raw: bytes) -> date | None:
    day, month, year = (_bcd(b) for b in raw)
    if day is None or month is None or year is None:
        return None
    try:
        return date(2000 + year, month, day)
    except ValueError:
        return None


def bfw240_records(payload: bytes) -> tuple[DataRecord, ...]:
    """Records of a BFW 240 Radio payload (the 40 bytes after the TPL header)."""
    history = monthly_values(payload)
    hca = bytes((_HCA_VIF,))
    records = [
        counted(b"\x02" + hca, int.from_bytes(payload[6:8], "big"), payload[6:8]),
        counted(
            storage_dif(0x02, STORAGE_BILLING) + hca,
            int.from_bytes(payload[4:6], "big"),
            payload[4:6],
        ),
    ]
    for month, value in enumerate(history):
        low, high, _ = _nibble_slot(month)
        raw = bytes((payload[min(low, high)], payload[max(low, high)]))
        records.append(counted(storage_dif(0x02, STORAGE_FIRST_MONTH + month) + hca, value, raw))
    raw_date = payload[37:40]
    sent = _sent_on(raw_date)
    date_header = b"\x02\x6c"
    records.append(
        absent(date_header, raw_date)
        if sent is None
        else standard(date_header, encode_date_g(sent))
    )
    return tuple(records)


def bfw240radio(hook: HookInput) -> HookResult | None:
    """Decode the proprietary payload; hand anything else back to the generic decoder."""
    if hook.ci != CI_SHORT_TPL or not hook.payload.startswith(_FILLER):
        return None
    return HookResult(bfw240_records(hook.payload))


def _bcd_byte(number: int) -> int:
    return (number // 10) << 4 | number % 10


def encode_bfw240(current: int, previous: int, history: tuple[int, ...], sent_on: date) -> bytes:
    """The 40 payload bytes after the TPL header, undocumented bytes zero; for tests."""
    if not (0 <= current <= 0xFFFF and 0 <= previous <= 0xFFFF):
        raise DecodeError("BFW 240 current and previous values are 16-bit")
    if len(history) != MONTHS or not all(0 <= v <= 0xFFF for v in history):
        raise DecodeError("BFW 240 keeps eighteen 12-bit monthly values")
    if not 2000 <= sent_on.year <= 2099:
        raise DecodeError("BFW 240 dates carry two-digit years of 2000-2099")
    out = bytearray(PAYLOAD_SIZE)
    out[0:2] = _FILLER
    out[4:6] = previous.to_bytes(2, "big")
    out[6:8] = current.to_bytes(2, "big")
    for month, value in enumerate(history):
        low, high, upper = _nibble_slot(month)
        out[low] = value & 0xFF
        out[high] |= (value >> 8) << 4 if upper else value >> 8
    out[37:40] = bytes(_bcd_byte(n) for n in (sent_on.day, sent_on.month, sent_on.year % 100))
    return bytes(out)
