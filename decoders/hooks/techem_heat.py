"""Techem heat meters and heat cost allocators with manufacturer-specific CIs A0-A2.

Layouts from wmbusmeters drivers/src/fhkvdataiii.xmq (and src/driver_fhkvdataiii.cc),
drivers/src/compact5.xmq and drivers/src/vario451.xmq, restated in our words; offsets count from
the byte after the CI.

- FHKV data III heat cost allocators (type 80, versions 69 and 94, CI A0 or A2): byte 0 a
  marker; bytes 1-2 the last billing date (day bits 4-0, month bits 8-5, year since 2000 from
  bit 9); bytes 3-4 the consumption at that date; bytes 5-6 the current date without a year
  (day bits 8-4, month bits 12-9); bytes 7-8 the consumption since the billing date; then, after
  one more byte on version 94, the room and the radiator temperatures in 0.01 C. All uint16 LE.
- Compact V heat meters (CI A1 or A2): bytes 3-5 the energy at the last billing date and bytes
  7-9 the energy since then, uint24 LE in kWh.
- Vario 4.51 heat meters (CI A2): bytes 3-4 the energy at the last billing date and bytes 7-8
  the energy since then, uint16 LE in MJ.

The total is the billing-date value plus the consumption since; the hooks give it storage 0,
the billing-date value storage 1 and the consumption since the billing date a manufacturer VIF
(EN 13757-3 has no code for "since the billing date").
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from decoders.datatypes import encode_date_g
from decoders.hooks import HookInput, HookResult
from decoders.hooks.synth import absent, counted, manufacturer, standard
from decoders.telegram import DataRecord
from metergate.errors import DecodeError, FrameError

FHKV_CIS = frozenset({0xA0, 0xA2})
COMPACT5_CIS = frozenset({0xA1, 0xA2})
VARIO451_CIS = frozenset({0xA2})
FHKV_EXTRA_BYTE_VERSIONS = frozenset({0x94})

# Headers the records get (see the module docstring).
_HCA_NOW = b"\x02\x6e"
_HCA_BILLING = b"\x42\x6e"
_DATE_NOW = b"\x02\x6c"
_DATE_BILLING = b"\x42\x6c"
_ROOM_TEMPERATURE = b"\x02\x65"  # external temperature, 0.01 C
_RADIATOR_TEMPERATURE = b"\x02\x59"  # flow temperature, 0.01 C
_SINCE_BILLING = b"\x04\xff\x01"


def _need(payload: bytes, size: int, model: str) -> None:
    if len(payload) < size:
        raise FrameError(f"{model} payload of {len(payload)} bytes is too short", offset=0)


def _u16(payload: bytes, at: int) -> int:
    return int.from_bytes(payload[at : at + 2], "little")


def _date_record(header: bytes, day: date | None, raw: bytes) -> DataRecord:
    if day is None or not 1981 <= day.year <= 2080:  # the years a type G date carries
        return absent(header, raw)
    return standard(header, encode_date_g(day))


def _billing_date(word: int) -> date | None:
    try:
        return date(2000 + (word >> 9), (word >> 5) & 0x0F, word & 0x1F)
    except ValueError:
        return None


def _current_date(word: int, billing: date | None) -> date | None:
    """The current date carries no year: it is the first day after the billing date with that
    month and day (a zero day reads as 1, a zero month as December, as the meters send them)."""
    if billing is None:
        return None
    day = (word >> 4) & 0x1F or 1
    month = (word >> 9) & 0x0F or 12
    later = (month, day) > (billing.month, billing.day)
    try:
        return date(billing.year if later else billing.year + 1, month, day)
    except ValueError:
        return None


def fhkvdataiii_records(payload: bytes, version: int) -> tuple[DataRecord, ...]:
    temperatures = 10 if version in FHKV_EXTRA_BYTE_VERSIONS else 9
    _need(payload, temperatures + 4, "FHKV data III")
    billing = _billing_date(_u16(payload, 1))
    now = _current_date(_u16(payload, 5), billing)
    room = payload[temperatures : temperatures + 2]
    radiator = payload[temperatures + 2 : temperatures + 4]
    return (
        counted(_HCA_NOW, _u16(payload, 7), payload[7:9]),
        counted(_HCA_BILLING, _u16(payload, 3), payload[3:5]),
        _date_record(_DATE_NOW, now, payload[5:7]),
        _date_record(_DATE_BILLING, billing, payload[1:3]),
        counted(_ROOM_TEMPERATURE, int.from_bytes(room, "little"), room),
        counted(_RADIATOR_TEMPERATURE, int.from_bytes(radiator, "little"), radiator),
    )


def _billing_records(
    unit_vif: int, billing: bytes, since: bytes, unit: str, exponent: int
) -> tuple[DataRecord, ...]:
    at_billing = int.from_bytes(billing, "little")
    since_billing = int.from_bytes(since, "little")
    return (
        counted(bytes((0x04, unit_vif)), at_billing + since_billing, billing + since),
        counted(bytes((0x44, unit_vif)), at_billing, billing),
        manufacturer(
            _SINCE_BILLING,
            since,
            "energy_since_billing_date",
            unit,
            Decimal(since_billing).scaleb(exponent),
        ),
    )


def compact5_records(payload: bytes) -> tuple[DataRecord, ...]:
    _need(payload, 10, "Compact V")
    # VIF 06: energy in kWh (EN 13757-3 Table 10, 10^(6-3) Wh).
    return _billing_records(0x06, payload[3:6], payload[7:10], "Wh", 3)


def vario451_records(payload: bytes) -> tuple[DataRecord, ...]:
    _need(payload, 9, "Vario 4.51")
    # VIF 0E: energy in MJ (EN 13757-3 Table 10, 10^6 J).
    return _billing_records(0x0E, payload[3:5], payload[7:9], "J", 6)


def fhkvdataiii(hook: HookInput) -> HookResult | None:
    if hook.ci not in FHKV_CIS:
        return None
    return HookResult(fhkvdataiii_records(hook.payload, hook.address.version))


def compact5(hook: HookInput) -> HookResult | None:
    if hook.ci not in COMPACT5_CIS:
        return None
    return HookResult(compact5_records(hook.payload))


def vario451(hook: HookInput) -> HookResult | None:
    if hook.ci not in VARIO451_CIS:
        return None
    return HookResult(vario451_records(hook.payload))


def _u16_bytes(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise DecodeError(f"{what} {value} does not fit 16 bits")
    return value.to_bytes(2, "little")


def encode_fhkvdataiii(
    billing: date,
    at_billing: int,
    now: date,
    since_billing: int,
    *,
    room_centi: int,
    radiator_centi: int,
    extra_byte: bool = False,
) -> bytes:
    """The bytes after the CI of an FHKV data III frame (marker 11 or, with the extra byte of
    version 94, 0F); for tests."""
    if not 2000 <= billing.year <= 2127:
        raise DecodeError("FHKV data III counts years 2000-2127")
    billing_word = (billing.year - 2000) << 9 | billing.month << 5 | billing.day
    now_word = now.month << 9 | now.day << 4
    return (
        (b"\x0f" if extra_byte else b"\x11")
        + _u16_bytes(billing_word, "billing date")
        + _u16_bytes(at_billing, "consumption")
        + _u16_bytes(now_word, "current date")
        + _u16_bytes(since_billing, "consumption")
        + (b"\x00" if extra_byte else b"")
        + _u16_bytes(room_centi, "room temperature")
        + _u16_bytes(radiator_centi, "radiator temperature")
        + bytes(8)
    )


def encode_billing_pair(at_billing: int, since_billing: int, width: int) -> bytes:
    """The bytes after the CI of a Compact V (width 3) or Vario 4.51 (width 2) frame; for
    tests."""
    try:
        return (
            bytes(3)
            + at_billing.to_bytes(width, "little")
            + bytes(4 - width)
            + since_billing.to_bytes(width, "little")
            + bytes(16)
        )
    except OverflowError:
        raise DecodeError(f"Techem billing values are {8 * width}-bit") from None
