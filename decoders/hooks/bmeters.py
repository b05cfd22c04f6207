"""B METERS HYDRODIGIT water meters (BMT versions 13, 15, 17): the data after DIF 0F.

Layout from wmbusmeters drivers/src/hydrodigit.xmq, in our words. The standard records (total
volume `0C 13`, meter clock `04 6D`) come first; after DIF 0F a contents byte says which blocks
follow, in this order:

- bit 0: battery, 1 byte; its low nibble indexes a voltage table;
- bit 1: fraud, a type byte (bit 7 magnetic, bit 6 sensor, bit 5 module removed) and a date;
- bit 7: leak date;
- bit 2: backflow volume in litres (uint32 LE);
- bit 4: twelve month-end totals, January first, each uint24 LE in units of 10 litres; FFFFFF
  marks a month before the radio module was fitted.

Dates are 3 bytes, year-in-century, month and day, each BCD. Each month slot holds the latest
completed month of that name, so the meter's clock places it: slot m is (current month - m)
months back, 12 for the current month's own slot. The month-end totals come out with that count
as their storage number and, at the same storage number, a date record with the last day of
that month (derived, not sent).
"""

from __future__ import annotations

import calendar
from datetime import date, datetime
from decimal import Decimal

from decoders.datatypes import decode_bcd, encode_date_g
from decoders.hooks import HookInput, HookResult
from decoders.hooks.synth import absent, counted, manufacturer, standard, storage_dif
from decoders.records import DIF_MANUFACTURER_DATA, parse_records
from decoders.telegram import DataRecord
from metergate.errors import DecodeError, FrameError

HAS_BATTERY = 0x01
HAS_FRAUD = 0x02
HAS_BACKFLOW = 0x04
HAS_MONTHLY = 0x10
HAS_LEAK = 0x80
NOT_FITTED = 0xFFFFFF
_MONTH_VOLUME_VIF = 0x14  # 10 litres = 0.01 m3

# Battery nibble -> volts (0, 14 and 15 read as a full battery).
_VOLTS = dict(
    enumerate(
        (
            "3.7", "1.9", "2.1", "2.2", "2.3", "2.4", "2.5", "2.65",
            "2.8", "2.9", "3.05", "3.2", "3.35", "3.5", "3.7", "3.7",
        )
    )
)  # fmt: skip


def _bcd_date(raw: bytes) -> date | None:
    digits = [decode_bcd(raw[i : i + 1]) for i in range(3)]
    if any(d is None for d in digits):
        return None
    year, month, day = (int(d) for d in digits if d is not None)
    try:
        return date(2000 + year, month, day)
    except ValueError:
        return None


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int, what: str) -> bytes:
        if self.pos + size > len(self.data):
            raise FrameError(f"HYDRODIGIT data ends inside its {what}", offset=self.pos)
        raw = self.data[self.pos : self.pos + size]
        self.pos += size
        return raw


def _month_end(slot: int, clock: datetime) -> tuple[int, date]:
    back = (clock.month - slot) % 12 or 12
    year = clock.year if slot < clock.month else clock.year - 1
    return back, date(year, slot, calendar.monthrange(year, slot)[1])


def _monthly(reader: _Reader, clock: datetime | None) -> list[DataRecord]:
    records: list[DataRecord] = []
    for slot in range(1, 13):
        raw = reader.take(3, "monthly totals")
        if clock is None:
            continue  # without the meter's clock the slot cannot be placed in time
        storage, day = _month_end(slot, clock)
        volume_header = storage_dif(0x03, storage) + bytes((_MONTH_VOLUME_VIF,))
        count = int.from_bytes(raw, "little")
        if count == NOT_FITTED:
            records.append(absent(volume_header, raw))
        else:
            records.append(counted(volume_header, count, raw))
        records.append(standard(storage_dif(0x02, storage) + b"\x6c", encode_date_g(day)))
    return records


def hydrodigit_records(data: bytes, clock: datetime | None) -> list[DataRecord]:
    """Records of the manufacturer data after DIF 0F; `clock` is the meter's date and time."""
    reader = _Reader(data)
    contents = reader.take(1, "contents byte")[0]
    records: list[DataRecord] = []
    if contents & HAS_BATTERY:
        raw = reader.take(1, "battery byte")
        volts = Decimal(_VOLTS[raw[0] & 0x0F])
        records.append(manufacturer(b"\x01\xff\x01", raw, "battery_voltage", "V", volts))
    if contents & HAS_FRAUD:
        kind = reader.take(1, "fraud type")
        records.append(manufacturer(b"\x01\xff\x02", kind, "fraud_type", "", Decimal(kind[0])))
        raw = reader.take(3, "fraud date")
        records.append(manufacturer(b"\x03\xff\x03", raw, "fraud_date", "date", _bcd_date(raw)))
    if contents & HAS_LEAK:
        raw = reader.take(3, "leak date")
        records.append(manufacturer(b"\x03\xff\x04", raw, "leak_date", "date", _bcd_date(raw)))
    if contents & HAS_BACKFLOW:
        raw = reader.take(4, "backflow volume")
        records.append(counted(b"\x04\x93\x3c", int.from_bytes(raw, "little"), raw))
    if contents & HAS_MONTHLY:
        records.extend(_monthly(reader, clock))
    return records


def hydrodigit(hook: HookInput) -> HookResult:
    records = parse_records(hook.payload).records
    clock = next(
        (
            r.value
            for r in records
            if r.quantity == "datetime" and r.storage == 0 and isinstance(r.value, datetime)
        ),
        None,
    )
    extra = [
        derived
        for record in records
        if record.spec.dif == bytes((DIF_MANUFACTURER_DATA,))
        for derived in hydrodigit_records(record.raw, clock)
    ]
    return HookResult(records + tuple(extra))


def encode_hydrodigit(
    *,
    battery: int | None = None,
    fraud: tuple[int, bytes] | None = None,
    leak_date: bytes | None = None,
    backflow_litres: int | None = None,
    monthly: list[int] | None = None,
) -> bytes:
    """The manufacturer data after DIF 0F (dates as 3 BCD bytes, months in 10 litres)."""
    try:
        return _encode(battery, fraud, leak_date, backflow_litres, monthly)
    except (OverflowError, ValueError):
        raise DecodeError("a HYDRODIGIT field does not fit its bytes") from None


def _encode(
    battery: int | None,
    fraud: tuple[int, bytes] | None,
    leak_date: bytes | None,
    backflow_litres: int | None,
    monthly: list[int] | None,
) -> bytes:
    contents = 0
    body = b""
    if battery is not None:
        contents |= HAS_BATTERY
        body += bytes((battery,))
    if fraud is not None:
        contents |= HAS_FRAUD
        body += bytes((fraud[0],)) + fraud[1]
    if leak_date is not None:
        contents |= HAS_LEAK
        body += leak_date
    if backflow_litres is not None:
        contents |= HAS_BACKFLOW
        body += backflow_litres.to_bytes(4, "little")
    if monthly is not None:
        contents |= HAS_MONTHLY
        body += b"".join(m.to_bytes(3, "little") for m in monthly)
    return bytes((contents,)) + body
