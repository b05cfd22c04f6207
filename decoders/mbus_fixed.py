"""The fixed data structure of wired M-Bus (CI 73, and 77 in mode 2): EN 1434-3 (1997), kept as
a legacy variant by EN 13757-3 and the M-Bus user group's documentation (PROTOCOL_NOTES §2.1).

Sixteen bytes: identification number (BCD, 4), access number (1), status (1), medium and units
(2), counter 1 (4), counter 2 (4). The table of units below is written for this project from the
M-Bus documentation as restated by libmbus (`mbus_data_fixed_unit`, whose comment table is the
consistent one: its code swaps 0D and 0E) and tmbus (`i2fu`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from decoders import datatypes as dt
from decoders.manufacturer import decode_id, encode_id
from decoders.telegram import DataRecord, RecordSpec, RecordValue
from metergate.errors import DecodeError, FrameError, UnsupportedError

FIXED_LENGTH = 16

# Status byte of the fixed structure. Bits 0 and 1 follow the M-Bus documentation as tmbus and
# m-bus-parser read it (bits 2-4 are the usual power-low and error flags); libmbus tests 80 and
# 40 instead, which no source document supports (see the report that added this module).
STATUS_BINARY = 0x01  # counters are signed binary, else 8-digit BCD
STATUS_STORED = 0x02  # counters hold the value at a fixed date, else the actual value

UNIT_TIME = 0x00  # "h,m,s"
UNIT_DATE = 0x01  # "D,M,Y"
UNIT_HISTORIC = 0x3E  # counter 2 only: counter 1's unit, a stored (historic) value
UNIT_NONE = 0x3F  # without units

# The 4-bit medium: bits 7-6 of the first unit byte are its bits 1-0, bits 7-6 of the second its
# bits 3-2. Codes A-E are the same media in mode 2 (most significant byte first).
FIXED_MEDIA = (
    "other",
    "oil",
    "electricity",
    "gas",
    "heat",
    "steam",
    "hot water",
    "water",
    "heat cost allocator",
    "reserved",
    "gas (mode 2)",
    "heat (mode 2)",
    "hot water (mode 2)",
    "water (mode 2)",
    "heat cost allocator (mode 2)",
    "reserved",
)
# The same media as EN 13757-3 device types (PROTOCOL_NOTES §7.11).
_DEVICE_TYPES = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 8: 8}
_DEVICE_TYPES.update({0x0A: 3, 0x0B: 4, 0x0C: 6, 0x0D: 7, 0x0E: 8})
_MODE_2_MEDIA = range(0x0A, 0x0F)

# Nine codes per family, one decade apart: (first code, quantity, base unit, exponent of the
# first code). E.g. 05 = kWh = 10^3 Wh, 29 = litre = 10^-3 m3, 35 = m3/h.
_FAMILIES = (
    (0x02, "energy", "Wh", 0),  # Wh .. 100 MWh
    (0x0B, "energy", "J", 3),  # kJ .. 100 GJ
    (0x14, "power", "W", 0),  # W .. 100 MW
    (0x1D, "power", "J/h", 3),  # kJ/h .. 100 GJ/h
    (0x26, "volume", "m3", -6),  # ml .. 100 m3
    (0x2F, "volume_flow", "m3/h", -6),  # ml/h .. 100 m3/h
)


@dataclass(frozen=True, slots=True)
class FixedUnit:
    quantity: str
    unit: str
    exponent: int = 0
    numeric: bool = True


def fixed_unit(code: int) -> FixedUnit:
    """The meaning of a 6-bit unit code of the fixed structure."""
    for first, quantity, unit, exponent in _FAMILIES:
        if first <= code < first + 9:
            return FixedUnit(quantity, unit, exponent + code - first)
    if code == 0x38:
        return FixedUnit("temperature", "C", -3)
    if code == 0x39:
        return FixedUnit("hca", "hca")
    if code == UNIT_TIME:
        return FixedUnit("time_hms", "", numeric=False)
    if code == UNIT_DATE:
        return FixedUnit("date_dmy", "", numeric=False)
    if code == UNIT_NONE:
        return FixedUnit("dimensionless", "")
    return FixedUnit(f"reserved_unit_{code:02x}", "")


@dataclass(frozen=True, slots=True)
class FixedData:
    id: str  # identification number as printed (8 BCD digits)
    access_no: int
    status: int
    medium: int  # the 4-bit fixed-structure medium code, see FIXED_MEDIA
    records: tuple[DataRecord, ...]  # counter 1, counter 2

    @property
    def medium_name(self) -> str:
        return FIXED_MEDIA[self.medium]

    @property
    def device_type(self) -> int | None:
        """The EN 13757-3 device type of the same medium; None for the reserved codes."""
        return _DEVICE_TYPES.get(self.medium)


def _counter(
    raw: bytes, code: int, unit: FixedUnit, *, status: int, storage: int, msb_first: bool
) -> DataRecord:
    binary = bool(status & STATUS_BINARY)
    ordered = raw[::-1] if msb_first else raw
    value: RecordValue
    if not unit.numeric:
        value = raw.hex()
    elif binary:
        value = dt.decode_int(ordered, unit.exponent)
    else:
        value = dt.decode_bcd(ordered, unit.exponent)
    spec = RecordSpec(
        dif=b"",
        vif=bytes((code,)),
        data_field=0x4 if binary else 0xC,  # as a DIF would say it: 32-bit integer, 8-digit BCD
        function="instantaneous",
        storage=storage,
        tariff=0,
        subunit=0,
        quantity=unit.quantity,
        unit=unit.unit,
        exponent=unit.exponent,
    )
    return DataRecord(spec, value, raw)


def parse_fixed(data: bytes, *, msb_first: bool = False) -> FixedData:
    """Decode the 16 bytes after CI 73 (or, with `msb_first`, CI 77: mode 2, where multibyte
    fields come most significant byte first).

    A medium code of mode 2 under CI 73 contradicts the CI; it is refused rather than guessed.
    """
    if len(data) != FIXED_LENGTH:
        raise FrameError(
            f"the fixed data structure has {FIXED_LENGTH} bytes, not {len(data)}",
            offset=min(len(data), FIXED_LENGTH),
            data=data,
        )
    ident = data[0:4][::-1] if msb_first else data[0:4]
    access_no, status, unit_byte_1, unit_byte_2 = data[4], data[5], data[6], data[7]
    medium = (unit_byte_1 >> 6) | ((unit_byte_2 >> 6) << 2)
    if medium in _MODE_2_MEDIA and not msb_first:
        raise UnsupportedError(
            f"medium code {medium:x} ({FIXED_MEDIA[medium]}) announces mode 2 under a mode 1 CI",
            offset=6,
            data=data,
        )
    stored = 1 if status & STATUS_STORED else 0
    code_1, code_2 = unit_byte_1 & 0x3F, unit_byte_2 & 0x3F
    unit_1 = fixed_unit(code_1)
    storage_2 = stored
    if code_2 == UNIT_HISTORIC:
        unit_2, storage_2 = unit_1, 1
    else:
        unit_2 = fixed_unit(code_2)
    records = (
        _counter(data[8:12], code_1, unit_1, status=status, storage=stored, msb_first=msb_first),
        _counter(
            data[12:16], code_2, unit_2, status=status, storage=storage_2, msb_first=msb_first
        ),
    )
    return FixedData(decode_id(ident), access_no, status, medium, records)


def _encode_counter(value: int, binary: bool, msb_first: bool) -> bytes:
    raw = dt.encode_int(value, 4) if binary else dt.encode_bcd(value, 4)
    return raw[::-1] if msb_first else raw


def encode_fixed(
    ident: str,
    *,
    access_no: int,
    status: int,
    medium: int,
    unit_1: int,
    counter_1: int,
    unit_2: int,
    counter_2: int,
    msb_first: bool = False,
) -> bytes:
    """The 16 bytes of a fixed data structure; counters are integers in steps of their unit
    (`fixed_unit(code).exponent`), coded binary or BCD as `status` says."""
    for name, value, top in (
        ("access number", access_no, 0xFF),
        ("status", status, 0xFF),
        ("medium", medium, 0x0F),
        ("unit 1", unit_1, 0x3F),
        ("unit 2", unit_2, 0x3F),
    ):
        if not 0 <= value <= top:
            raise DecodeError(f"{name} must be 0-{top:#x}, not {value}")
    binary = bool(status & STATUS_BINARY)
    id_bytes = encode_id(ident)
    return (
        (id_bytes[::-1] if msb_first else id_bytes)
        + bytes((access_no, status, unit_1 | (medium & 0x3) << 6, unit_2 | (medium >> 2) << 6))
        + _encode_counter(counter_1, binary, msb_first)
        + _encode_counter(counter_2, binary, msb_first)
    )


def counter_steps(value: Decimal, code: int) -> int:
    """The integer a counter with unit `code` sends for `value` in the base unit (the inverse
    of the decoder's scaling); a value finer than the unit's step is refused."""
    steps = value.scaleb(-fixed_unit(code).exponent)
    if steps != steps.to_integral_value():
        raise DecodeError(f"{value} is not a whole number of steps of unit {code:02x}")
    return int(steps)
