"""Value information: what a VIF and its VIFEs say about a record (EN 13757-3 §6.4).

`interpret_vif` turns the VIF byte, the VIFE bytes and any plain-text unit into a quantity, a
base unit and a power of ten. Units are the base units of DESIGN.md section 2 with the VIF's
exponent folded into `exponent`, so the value is always `data * 10**exponent` in `unit`.
Unknown codes are kept and named (`vife_xx`), never fatal: a meter that uses a code this table
lacks still delivers its other records.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from functools import lru_cache

_TIME_UNITS = ("s", "min", "h", "d")


@dataclass(frozen=True, slots=True)
class VifMeaning:
    quantity: str
    unit: str
    exponent: int = 0
    kind: str = "number"  # number, date, datetime, time, text, binary, dst
    factor: Decimal | None = None  # exact non-decimal conversion (US gallons, cubic feet)
    error_code: int | None = None


def _primary(code: int) -> VifMeaning:
    """EN 13757-3 Table 10, primary VIF codes (bit 7 masked off)."""
    n = code & 0x07
    nn = code & 0x03
    if code <= 0x07:
        return VifMeaning("energy", "Wh", n - 3)
    if code <= 0x0F:
        return VifMeaning("energy", "J", n)
    if code <= 0x17:
        return VifMeaning("volume", "m3", n - 6)
    if code <= 0x1F:
        return VifMeaning("mass", "kg", n - 3)
    if code <= 0x23:
        return VifMeaning("on_time", _TIME_UNITS[nn])
    if code <= 0x27:
        return VifMeaning("operating_time", _TIME_UNITS[nn])
    if code <= 0x2F:
        return VifMeaning("power", "W", n - 3)
    if code <= 0x37:
        return VifMeaning("power", "J/h", n)
    if code <= 0x3F:
        return VifMeaning("volume_flow", "m3/h", n - 6)
    if code <= 0x47:
        return VifMeaning("volume_flow", "m3/min", n - 7)
    if code <= 0x4F:
        return VifMeaning("volume_flow", "m3/s", n - 9)
    if code <= 0x57:
        return VifMeaning("mass_flow", "kg/h", n - 3)
    if code <= 0x5B:
        return VifMeaning("flow_temperature", "C", nn - 3)
    if code <= 0x5F:
        return VifMeaning("return_temperature", "C", nn - 3)
    if code <= 0x63:
        return VifMeaning("temperature_difference", "K", nn - 3)
    if code <= 0x67:
        return VifMeaning("external_temperature", "C", nn - 3)
    if code <= 0x6B:
        return VifMeaning("pressure", "bar", nn - 3)
    if code == 0x6C:
        return VifMeaning("date", "date", kind="date")
    if code == 0x6D:
        return VifMeaning("datetime", "datetime", kind="datetime")
    if code == 0x6E:
        return VifMeaning("hca", "hca")
    if code <= 0x73 and code >= 0x70:
        return VifMeaning("averaging_duration", _TIME_UNITS[nn])
    if 0x74 <= code <= 0x77:
        return VifMeaning("actuality_duration", _TIME_UNITS[nn])
    return {
        0x78: VifMeaning("fabrication_no", ""),
        0x79: VifMeaning("enhanced_id", ""),
        0x7A: VifMeaning("bus_address", ""),
        0x7E: VifMeaning("any", ""),
    }.get(code, VifMeaning(f"reserved_vif_{code:02x}", ""))


_FD_NAMED: dict[int, VifMeaning] = {
    0x08: VifMeaning("access_no", ""),
    0x09: VifMeaning("medium", ""),
    0x0A: VifMeaning("manufacturer", ""),
    0x0B: VifMeaning("parameter_set_id", ""),
    0x0C: VifMeaning("model_version", ""),
    0x0D: VifMeaning("hardware_version", ""),
    0x0E: VifMeaning("firmware_version", ""),
    0x0F: VifMeaning("software_version", ""),
    0x10: VifMeaning("customer_location", ""),
    0x11: VifMeaning("customer", ""),
    0x12: VifMeaning("access_code_user", ""),
    0x13: VifMeaning("access_code_operator", ""),
    0x14: VifMeaning("access_code_system_operator", ""),
    0x15: VifMeaning("access_code_developer", ""),
    0x16: VifMeaning("password", ""),
    0x17: VifMeaning("error_flags", "", kind="binary"),
    0x18: VifMeaning("error_mask", "", kind="binary"),
    0x1A: VifMeaning("digital_output", "", kind="binary"),
    0x1B: VifMeaning("digital_input", "", kind="binary"),
    0x1C: VifMeaning("baud_rate", "Bd"),
    0x1D: VifMeaning("response_delay", "bit times"),
    0x1E: VifMeaning("retry", ""),
    0x1F: VifMeaning("remote_control", "", kind="binary"),
    0x20: VifMeaning("first_storage_no", ""),
    0x21: VifMeaning("last_storage_no", ""),
    0x22: VifMeaning("storage_block_size", ""),
    0x28: VifMeaning("storage_interval", "month"),
    0x29: VifMeaning("storage_interval", "y"),
    0x30: VifMeaning("tariff_start", "datetime", kind="datetime"),
    0x38: VifMeaning("tariff_period", "month"),
    0x39: VifMeaning("tariff_period", "y"),
    0x3A: VifMeaning("dimensionless", ""),
    0x3B: VifMeaning("wmbus_container", "", kind="binary"),
    0x60: VifMeaning("reset_counter", ""),
    0x61: VifMeaning("cumulation_counter", ""),
    0x62: VifMeaning("control_signal", "", kind="binary"),
    0x63: VifMeaning("day_of_week", ""),
    0x64: VifMeaning("week_number", ""),
    0x65: VifMeaning("day_change_time", "", kind="time"),
    0x66: VifMeaning("parameter_activation_state", "", kind="binary"),
    0x67: VifMeaning("special_supplier_information", ""),
    0x70: VifMeaning("battery_change_datetime", "datetime", kind="datetime"),
    0x71: VifMeaning("rssi", ""),
    0x72: VifMeaning("daylight_saving", "", kind="dst"),
    0x73: VifMeaning("listening_window", "", kind="binary"),
    0x74: VifMeaning("remaining_battery_life", "d"),
    0x75: VifMeaning("meter_stopped_count", ""),
    0x76: VifMeaning("manufacturer_protocol_container", "", kind="binary"),
}

_DURATION_GROUPS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (0x24, "storage_interval", _TIME_UNITS),
    (0x2C, "duration_since_readout", _TIME_UNITS),
    (0x34, "tariff_period", _TIME_UNITS),
    (0x68, "duration_since_cumulation", ("h", "d", "month", "y")),
    (0x6C, "battery_operating_time", ("h", "d", "month", "y")),
)


def _second_extension(code: int) -> VifMeaning:
    """EN 13757-3 Table 14, VIF FD: the second extension table."""
    nn = code & 0x03
    if code <= 0x03:
        return VifMeaning("credit", "currency", nn - 3)
    if code <= 0x07:
        return VifMeaning("debit", "currency", nn - 3)
    if code in _FD_NAMED:
        return _FD_NAMED[code]
    for start, quantity, units in _DURATION_GROUPS:
        if start <= code < start + 4:
            return VifMeaning(quantity, units[code - start])
    if 0x31 <= code <= 0x33:
        return VifMeaning("tariff_duration", _TIME_UNITS[nn])
    if 0x40 <= code <= 0x4F:
        return VifMeaning("voltage", "V", (code & 0x0F) - 9)
    if 0x50 <= code <= 0x5F:
        return VifMeaning("current", "A", (code & 0x0F) - 12)
    return VifMeaning(f"reserved_fd_{code:02x}", "")


_US_GALLON_M3 = Decimal("0.003785411784")  # exact by definition (231 cubic inches)
_CUBIC_FOOT_M3 = Decimal("0.028316846592")  # exact by definition


def _first_extension(code: int) -> VifMeaning:
    """EN 13757-3 Table 12, VIF FB: the first extension table, in base units."""
    n = code & 0x01
    nn = code & 0x03
    if code <= 0x01:
        return VifMeaning("energy", "Wh", n + 5)  # 0.1 MWh .. 1 MWh
    if code <= 0x03:
        return VifMeaning("reactive_energy", "varh", n + 2)  # 0.1 kvarh .. 1 kvarh
    if 0x08 <= code <= 0x09:
        return VifMeaning("energy", "J", n + 8)  # 0.1 GJ .. 1 GJ
    if 0x10 <= code <= 0x11:
        return VifMeaning("volume", "m3", n + 2)
    if 0x18 <= code <= 0x19:
        return VifMeaning("mass", "kg", n + 5)  # 100 t .. 1000 t
    if 0x1A <= code <= 0x1B:
        return VifMeaning("relative_humidity", "%RH", n - 1)
    if code == 0x21:
        return VifMeaning("volume", "m3", -1, factor=_CUBIC_FOOT_M3)
    if code == 0x22:
        return VifMeaning("volume", "m3", -1, factor=_US_GALLON_M3)
    if code == 0x23:
        return VifMeaning("volume", "m3", 0, factor=_US_GALLON_M3)
    if code == 0x24:
        return VifMeaning("volume_flow", "m3/min", -3, factor=_US_GALLON_M3)
    if code == 0x25:
        return VifMeaning("volume_flow", "m3/min", 0, factor=_US_GALLON_M3)
    if code == 0x26:
        return VifMeaning("volume_flow", "m3/h", 0, factor=_US_GALLON_M3)
    if 0x28 <= code <= 0x29:
        return VifMeaning("power", "W", n + 5)  # 0.1 MW .. 1 MW
    if 0x30 <= code <= 0x31:
        return VifMeaning("power", "J/h", n + 8)  # 0.1 GJ/h .. 1 GJ/h
    if 0x58 <= code <= 0x5B:
        return VifMeaning("flow_temperature", "F", nn - 3)
    if 0x5C <= code <= 0x5F:
        return VifMeaning("return_temperature", "F", nn - 3)
    if 0x60 <= code <= 0x63:
        return VifMeaning("temperature_difference", "F", nn - 3)
    if 0x64 <= code <= 0x67:
        return VifMeaning("external_temperature", "F", nn - 3)
    if 0x70 <= code <= 0x73:
        return VifMeaning("cold_warm_temperature_limit", "F", nn - 3)
    if 0x74 <= code <= 0x77:
        return VifMeaning("cold_warm_temperature_limit", "C", nn - 3)
    if 0x78 <= code <= 0x7F:
        return VifMeaning("max_power_count", "W", (code & 0x07) - 3)
    return VifMeaning(f"reserved_fb_{code:02x}", "")


_PER_TIME = ("s", "min", "h", "d", "week", "month", "y", "revolution")
_PER_UNIT = ("l", "m3", "kg", "K", "kWh", "GJ", "kW", "K*l", "V", "A")


def _moment(meaning: VifMeaning, quantity: str) -> VifMeaning:
    """A date/time about the VIF's quantity: the VIF's exponent and factor do not apply to it."""
    return VifMeaning(quantity, "datetime", kind="datetime", error_code=meaning.error_code)


def _duration(meaning: VifMeaning, quantity: str, unit: str) -> VifMeaning:
    """A duration about the VIF's quantity, counted in `unit` and not scaled by the VIF."""
    return VifMeaning(quantity, unit, error_code=meaning.error_code)


def _combinable(meaning: VifMeaning, vife: int) -> VifMeaning:
    """Apply one combinable (orthogonal) VIFE, EN 13757-3 Table 15."""
    code = vife & 0x7F
    q = meaning.quantity
    if code <= 0x1F:
        return replace(meaning, error_code=code)
    if code <= 0x27:
        per = _PER_TIME[code - 0x20]
        return replace(meaning, quantity=f"{q}_per_{per}", unit=f"{meaning.unit}/{per}")
    if code <= 0x2B:
        return replace(meaning, quantity=f"{q}_per_pulse_{code - 0x28}")
    if code <= 0x35:
        per = _PER_UNIT[code - 0x2C]
        return replace(meaning, quantity=f"{q}_per_{per}", unit=f"{meaning.unit}/{per}")
    if code <= 0x38:
        times = ("s", "s/V", "s/A")[code - 0x36]
        return replace(meaning, quantity=f"{q}_times_{times}", unit=f"{meaning.unit}*{times}")
    if code == 0x39:
        return _moment(meaning, f"{q}_start")
    if code == 0x3A:
        return replace(meaning, quantity=f"{q}_uncorrected")
    if code == 0x3B:
        return replace(meaning, quantity=f"{q}_forward")
    if code == 0x3C:
        return replace(meaning, quantity=f"{q}_backward")
    if code in (0x40, 0x48):
        return replace(meaning, quantity=f"{q}_{'upper' if code & 0x08 else 'lower'}_limit")
    if code in (0x41, 0x49):
        which = "upper" if code & 0x08 else "lower"
        return VifMeaning(f"{q}_{which}_limit_exceeded", "", error_code=meaning.error_code)
    if 0x40 <= code <= 0x4F and code & 0x02:
        # E100 uf1b: date of the first/last begin/end of exceeding the lower/upper limit.
        name = (
            f"{'upper' if code & 0x08 else 'lower'}_limit_"
            f"{'last' if code & 0x04 else 'first'}_{'end' if code & 0x01 else 'begin'}"
        )
        return _moment(meaning, f"{q}_{name}")
    if 0x50 <= code <= 0x5F:
        return _duration(meaning, f"{q}_limit_exceeded_duration", _TIME_UNITS[code & 0x03])
    if 0x60 <= code <= 0x6F:
        if code & 0x08:
            return _moment(meaning, f"{q}_of_d_time")
        return _duration(meaning, f"{q}_duration_of_d", _TIME_UNITS[code & 0x03])
    if 0x70 <= code <= 0x77:
        return replace(meaning, exponent=meaning.exponent + (code & 0x07) - 6)
    if 0x78 <= code <= 0x7B:
        return replace(meaning, quantity=f"{q}_additive_correction")
    if code == 0x7D:
        return replace(meaning, exponent=meaning.exponent + 3)
    if code == 0x7E:
        return replace(meaning, quantity=f"{q}_future")
    return replace(meaning, quantity=f"{q}_vife_{code:02x}")


@lru_cache(maxsize=4096)
def interpret_vif(vif: int, vifes: bytes, text_unit: str | None = None) -> VifMeaning:
    """The meaning of a VIF, its VIFEs and (for VIF 7C/FC) its plain-text unit."""
    code = vif & 0x7F
    rest = vifes
    if vif == 0xFB and rest:
        meaning = _first_extension(rest[0] & 0x7F)
        rest = rest[1:]
    elif vif == 0xFD and rest:
        meaning = _second_extension(rest[0] & 0x7F)
        rest = rest[1:]
    elif code == 0x7F:
        # EN 13757-3 §6.4.1: everything after a manufacturer-specific VIF is the maker's own.
        # The VIFEs name the field (Kamstrup FF 20 info codes, FF 23 alarms), so they are part
        # of the quantity: two such records must never share one.
        suffix = f"_{vifes.hex()}" if vifes else ""
        return VifMeaning(f"manufacturer_specific{suffix}", "", kind="binary")
    elif code == 0x7C:
        meaning = VifMeaning("plain_text_unit", text_unit or "")
    else:
        meaning = _primary(code)
    for position, vife in enumerate(rest):
        if vife & 0x7F == 0x7F:
            # VIFE 7F (EN 13757-3 Table 15): the VIFEs after it are the maker's. In the field
            # the data keep the VIF's coding and those VIFEs say which channel it is (Schneider
            # iEM3000: FD DC FF 01 = current of phase 1), so the value is decoded as the VIF
            # says and the maker's VIFEs go into the quantity, keeping each channel apart.
            return replace(
                meaning, quantity=f"{meaning.quantity}_mfct_{rest[position + 1 :].hex()}"
            )
        if vife & 0x7F == 0x7C and position + 1 < len(rest):
            ext = rest[position + 1] & 0x7F
            return replace(meaning, quantity=f"{meaning.quantity}_vife_7c{ext:02x}")
        meaning = _combinable(meaning, vife)
    return meaning
