"""VIF and VIFE tables (decoders.vif) against PROTOCOL_NOTES.md sections 7.3-7.6.

The expected rows are written out from the tables of the notes, range by range, not computed
the way the module computes them.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders.vif import VifMeaning, interpret_vif

TIME = ("s", "min", "h", "d")

# PROTOCOL_NOTES 7.3: (first VIF, last VIF, quantity, unit, exponent of the first VIF); the
# exponent grows by one per code within a range.
PRIMARY_RANGES: list[tuple[int, int, str, str, int]] = [
    (0x00, 0x07, "energy", "Wh", -3),
    (0x08, 0x0F, "energy", "J", 0),
    (0x10, 0x17, "volume", "m3", -6),
    (0x18, 0x1F, "mass", "kg", -3),
    (0x28, 0x2F, "power", "W", -3),
    (0x30, 0x37, "power", "J/h", 0),
    (0x38, 0x3F, "volume_flow", "m3/h", -6),
    (0x40, 0x47, "volume_flow", "m3/min", -7),
    (0x48, 0x4F, "volume_flow", "m3/s", -9),
    (0x50, 0x57, "mass_flow", "kg/h", -3),
    (0x58, 0x5B, "flow_temperature", "C", -3),
    (0x5C, 0x5F, "return_temperature", "C", -3),
    (0x60, 0x63, "temperature_difference", "K", -3),
    (0x64, 0x67, "external_temperature", "C", -3),
    (0x68, 0x6B, "pressure", "bar", -3),
]

# PROTOCOL_NOTES 7.3: durations whose low two bits pick the time unit, with no exponent.
DURATION_RANGES = [
    (0x20, "on_time"),
    (0x24, "operating_time"),
    (0x70, "averaging_duration"),
    (0x74, "actuality_duration"),
]


def _primary_rows() -> list[tuple[int, str, str, int]]:
    return [
        (code, quantity, unit, exponent + code - first)
        for first, last, quantity, unit, exponent in PRIMARY_RANGES
        for code in range(first, last + 1)
    ]


@pytest.mark.parametrize(("code", "quantity", "unit", "exponent"), _primary_rows())
def test_primary_vif_ranges(code: int, quantity: str, unit: str, exponent: int) -> None:
    for vif in (code, code | 0x80):  # bit 7 only says VIFEs follow
        vifes = b"\x00" if vif & 0x80 else b""  # VIFE 00: an error code, leaves the rest
        meaning = interpret_vif(vif, vifes)
        assert (meaning.quantity, meaning.unit, meaning.exponent) == (quantity, unit, exponent)
        assert meaning.kind == "number"
        assert meaning.factor is None


def test_primary_vif_examples() -> None:
    # PROTOCOL_NOTES 7.3: `13` is litres; `5B`/`67` are the Kamstrup temperatures of 6.2 (1 C).
    assert interpret_vif(0x13, b"") == VifMeaning("volume", "m3", -3)
    assert interpret_vif(0x5B, b"") == VifMeaning("flow_temperature", "C", 0)
    assert interpret_vif(0x67, b"") == VifMeaning("external_temperature", "C", 0)
    assert interpret_vif(0x06, b"") == VifMeaning("energy", "Wh", 3)  # kWh


@pytest.mark.parametrize(("first", "quantity"), DURATION_RANGES)
def test_primary_durations(first: int, quantity: str) -> None:
    for nn, unit in enumerate(TIME):
        assert interpret_vif(first + nn, b"") == VifMeaning(quantity, unit, 0)


@pytest.mark.parametrize(
    ("vif", "quantity", "unit", "kind"),
    [
        (0x6C, "date", "date", "date"),
        (0x6D, "datetime", "datetime", "datetime"),
        (0x6E, "hca", "hca", "number"),
        (0x78, "fabrication_no", "", "number"),
        (0x79, "enhanced_id", "", "number"),
        (0x7A, "bus_address", "", "number"),
        (0x7E, "any", "", "number"),
    ],
)
def test_primary_single_codes(vif: int, quantity: str, unit: str, kind: str) -> None:
    meaning = interpret_vif(vif, b"")
    assert (meaning.quantity, meaning.unit, meaning.exponent, meaning.kind) == (
        quantity,
        unit,
        0,
        kind,
    )


@pytest.mark.parametrize("vif", [0x6F, 0x7B, 0x7D])
def test_reserved_primary_codes_are_named_not_fatal(vif: int) -> None:
    # 6F is reserved; 7B/7D without bit 7 have no extension byte to follow
    assert interpret_vif(vif, b"").quantity == f"reserved_vif_{vif:02x}"


# --- FD, the second extension table (PROTOCOL_NOTES 7.4) ----------------------------------------


@pytest.mark.parametrize(
    ("vife", "quantity", "unit", "exponent", "kind"),
    [
        (0x00, "credit", "currency", -3, "number"),
        (0x03, "credit", "currency", 0, "number"),
        (0x04, "debit", "currency", -3, "number"),
        (0x07, "debit", "currency", 0, "number"),
        (0x08, "access_no", "", 0, "number"),
        (0x09, "medium", "", 0, "number"),
        (0x0A, "manufacturer", "", 0, "number"),
        (0x0B, "parameter_set_id", "", 0, "number"),
        (0x0C, "model_version", "", 0, "number"),
        (0x0D, "hardware_version", "", 0, "number"),
        (0x0E, "firmware_version", "", 0, "number"),
        (0x0F, "software_version", "", 0, "number"),
        (0x10, "customer_location", "", 0, "number"),
        (0x11, "customer", "", 0, "number"),
        (0x16, "password", "", 0, "number"),
        (0x17, "error_flags", "", 0, "binary"),
        (0x18, "error_mask", "", 0, "binary"),
        (0x1A, "digital_output", "", 0, "binary"),
        (0x1B, "digital_input", "", 0, "binary"),
        (0x1C, "baud_rate", "Bd", 0, "number"),
        (0x1D, "response_delay", "bit times", 0, "number"),
        (0x1E, "retry", "", 0, "number"),
        (0x20, "first_storage_no", "", 0, "number"),
        (0x21, "last_storage_no", "", 0, "number"),
        (0x22, "storage_block_size", "", 0, "number"),
        (0x24, "storage_interval", "s", 0, "number"),
        (0x25, "storage_interval", "min", 0, "number"),
        (0x26, "storage_interval", "h", 0, "number"),
        (0x27, "storage_interval", "d", 0, "number"),
        (0x28, "storage_interval", "month", 0, "number"),
        (0x29, "storage_interval", "y", 0, "number"),
        (0x2C, "duration_since_readout", "s", 0, "number"),
        (0x2F, "duration_since_readout", "d", 0, "number"),
        (0x30, "tariff_start", "datetime", 0, "datetime"),
        (0x3A, "dimensionless", "", 0, "number"),
        (0x3B, "wmbus_container", "", 0, "binary"),
        (0x40, "voltage", "V", -9, "number"),
        (0x4F, "voltage", "V", 6, "number"),
        (0x50, "current", "A", -12, "number"),
        (0x5F, "current", "A", 3, "number"),
        (0x60, "reset_counter", "", 0, "number"),
        (0x61, "cumulation_counter", "", 0, "number"),
        (0x62, "control_signal", "", 0, "binary"),
        (0x63, "day_of_week", "", 0, "number"),
        (0x64, "week_number", "", 0, "number"),
        (0x65, "day_change_time", "", 0, "time"),
        (0x66, "parameter_activation_state", "", 0, "binary"),
        (0x67, "special_supplier_information", "", 0, "number"),
        (0x68, "duration_since_cumulation", "h", 0, "number"),
        (0x6B, "duration_since_cumulation", "y", 0, "number"),
        (0x6C, "battery_operating_time", "h", 0, "number"),
        (0x6D, "battery_operating_time", "d", 0, "number"),
        (0x6E, "battery_operating_time", "month", 0, "number"),
        (0x6F, "battery_operating_time", "y", 0, "number"),
        (0x70, "battery_change_datetime", "datetime", 0, "datetime"),
        (0x71, "rssi", "", 0, "number"),
        (0x74, "remaining_battery_life", "d", 0, "number"),
    ],
)
def test_second_extension_table(
    vife: int, quantity: str, unit: str, exponent: int, kind: str
) -> None:
    meaning = interpret_vif(0xFD, bytes((vife,)))
    assert (meaning.quantity, meaning.unit, meaning.exponent, meaning.kind) == (
        quantity,
        unit,
        exponent,
        kind,
    )
    # the extension bit of the table byte only says more VIFEs follow
    chained = interpret_vif(0xFD, bytes((vife | 0x80, 0x00)))
    assert (chained.quantity, chained.unit, chained.exponent) == (quantity, unit, exponent)


@pytest.mark.parametrize("vife", [0x19, 0x23, 0x2A, 0x77, 0x7E])
def test_unknown_second_extension_codes_are_named(vife: int) -> None:
    assert interpret_vif(0xFD, bytes((vife,))).quantity == f"reserved_fd_{vife:02x}"


# --- FB, the first extension table (PROTOCOL_NOTES 7.4) -----------------------------------------

US_GALLON = Decimal("0.003785411784")
CUBIC_FOOT = Decimal("0.028316846592")


@pytest.mark.parametrize(
    ("vife", "quantity", "unit", "exponent", "factor"),
    [
        (0x00, "energy", "Wh", 5, None),  # 0.1 MWh
        (0x01, "energy", "Wh", 6, None),  # 1 MWh
        (0x02, "reactive_energy", "varh", 2, None),  # 0.1 kvarh
        (0x08, "energy", "J", 8, None),  # 0.1 GJ
        (0x09, "energy", "J", 9, None),  # 1 GJ
        (0x10, "volume", "m3", 2, None),
        (0x11, "volume", "m3", 3, None),
        (0x18, "mass", "kg", 5, None),  # 100 t
        (0x19, "mass", "kg", 6, None),  # 1000 t
        (0x1A, "relative_humidity", "%RH", -1, None),
        (0x1B, "relative_humidity", "%RH", 0, None),
        (0x21, "volume", "m3", -1, CUBIC_FOOT),  # 0.1 ft3
        (0x22, "volume", "m3", -1, US_GALLON),  # 0.1 US gallon
        (0x23, "volume", "m3", 0, US_GALLON),  # 1 US gallon
        (0x24, "volume_flow", "m3/min", -3, US_GALLON),  # 0.001 US gallon/min
        (0x25, "volume_flow", "m3/min", 0, US_GALLON),
        (0x26, "volume_flow", "m3/h", 0, US_GALLON),
        (0x28, "power", "W", 5, None),  # 0.1 MW
        (0x29, "power", "W", 6, None),
        (0x30, "power", "J/h", 8, None),  # 0.1 GJ/h
        (0x31, "power", "J/h", 9, None),
        (0x58, "flow_temperature", "F", -3, None),
        (0x5B, "flow_temperature", "F", 0, None),
        (0x5C, "return_temperature", "F", -3, None),
        (0x60, "temperature_difference", "F", -3, None),
        (0x67, "external_temperature", "F", 0, None),
        (0x70, "cold_warm_temperature_limit", "F", -3, None),
        (0x77, "cold_warm_temperature_limit", "C", 0, None),
        (0x78, "max_power_count", "W", -3, None),
        (0x7F, "max_power_count", "W", 4, None),
    ],
)
def test_first_extension_table(
    vife: int, quantity: str, unit: str, exponent: int, factor: Decimal | None
) -> None:
    meaning = interpret_vif(0xFB, bytes((vife,)))
    assert (meaning.quantity, meaning.unit, meaning.exponent, meaning.factor) == (
        quantity,
        unit,
        exponent,
        factor,
    )


def test_us_gallon_and_cubic_foot_are_exact() -> None:
    # 1 US gallon = 231 in3 and 1 in = 0.0254 m; 1 ft3 = 1728 in3
    inch3 = Decimal("0.0254") ** 3
    assert inch3 * 231 == US_GALLON
    assert inch3 * 1728 == CUBIC_FOOT


# --- combinable VIFEs (PROTOCOL_NOTES 7.5) ------------------------------------------------------


@pytest.mark.parametrize(
    ("vife", "per"),
    [
        (0x20, "s"),
        (0x21, "min"),
        (0x22, "h"),
        (0x23, "d"),
        (0x24, "week"),
        (0x25, "month"),
        (0x26, "y"),
        (0x27, "revolution"),
    ],
)
def test_per_time_unit(vife: int, per: str) -> None:
    meaning = interpret_vif(0x93, bytes((vife,)))
    assert meaning.quantity == f"volume_per_{per}"
    assert meaning.unit == f"m3/{per}"
    assert meaning.exponent == -3


@pytest.mark.parametrize(
    ("vife", "per"),
    [(0x2C, "l"), (0x2D, "m3"), (0x2E, "kg"), (0x2F, "K"), (0x30, "kWh"), (0x35, "A")],
)
def test_per_unit(vife: int, per: str) -> None:
    meaning = interpret_vif(0x86, bytes((vife,)))
    assert (meaning.quantity, meaning.unit) == (f"energy_per_{per}", f"Wh/{per}")


def test_forward_and_backward() -> None:
    # PROTOCOL_NOTES 7.5: 3B accumulates only positive flow, 3C only negative; 3 (waterstarm)
    assert interpret_vif(0x93, b"\x3b") == VifMeaning("volume_forward", "m3", -3)
    assert interpret_vif(0x93, b"\x3c") == VifMeaning("volume_backward", "m3", -3)
    assert interpret_vif(0x93, b"\xbc\x00").quantity == "volume_backward"


@pytest.mark.parametrize(
    ("vife", "quantity", "unit", "exponent"),
    [
        (0x40, "volume_flow_lower_limit", "m3/h", -3),
        (0x48, "volume_flow_upper_limit", "m3/h", -3),
        (0x41, "volume_flow_lower_limit_exceeded", "", 0),  # a count, not a flow
        (0x49, "volume_flow_upper_limit_exceeded", "", 0),
        # dates and durations of exceeding: a time, which the flow's exponent does not scale
        (0x42, "volume_flow_lower_limit_first_begin", "datetime", 0),
        (0x4F, "volume_flow_upper_limit_last_end", "datetime", 0),
        (0x50, "volume_flow_limit_exceeded_duration", "s", 0),
        (0x53, "volume_flow_limit_exceeded_duration", "d", 0),
        (0x39, "volume_flow_start", "datetime", 0),
        (0x60, "volume_flow_duration_of_d", "s", 0),
        (0x62, "volume_flow_duration_of_d", "h", 0),
        (0x68, "volume_flow_of_d_time", "datetime", 0),
    ],
)
def test_limits_and_their_times(vife: int, quantity: str, unit: str, exponent: int) -> None:
    meaning = interpret_vif(0xBB, bytes((vife,)))  # 3B: volume flow in 10^-3 m3/h
    assert (meaning.quantity, meaning.unit, meaning.exponent) == (quantity, unit, exponent)
    assert meaning.kind == ("datetime" if unit == "datetime" else "number")


@pytest.mark.parametrize(
    ("vife", "unit"), [(0x41, ""), (0x50, "s"), (0x60, "s"), (0x39, "datetime")]
)
def test_counts_and_times_of_a_flow_in_us_gallons_are_not_converted(vife: int, unit: str) -> None:
    # FB 24 is 0.001 US gallon/min: a count or a time about that flow has neither scale nor factor
    meaning = interpret_vif(0xFB, bytes((0xA4, vife)))
    assert (meaning.unit, meaning.exponent, meaning.factor) == (unit, 0, None)


@pytest.mark.parametrize("n", range(8))
def test_multiplicative_correction(n: int) -> None:
    # PROTOCOL_NOTES 7.5: VIFE 70-77 multiplies by 10^(n-6), on top of the VIF's own exponent
    meaning = interpret_vif(0x93, bytes((0x70 + n,)))
    assert (meaning.quantity, meaning.unit, meaning.exponent) == ("volume", "m3", -3 + n - 6)


def test_correction_by_a_thousand_and_chains() -> None:
    assert interpret_vif(0x93, b"\x7d").exponent == 0  # 7D: x 10^3
    # two corrections in one chain both apply (the extension bit is masked off)
    assert interpret_vif(0x93, b"\xfd\x74").exponent == -3 + 3 - 2
    assert interpret_vif(0x93, b"\xf4\x3b") == VifMeaning("volume_forward", "m3", -5)


@pytest.mark.parametrize("code", range(0x20))
def test_error_codes(code: int) -> None:
    meaning = interpret_vif(0x93, bytes((code,)))
    assert meaning == VifMeaning("volume", "m3", -3, error_code=code)
    # the error code does not hide what follows it
    assert interpret_vif(0x93, bytes((code | 0x80, 0x3C))).quantity == "volume_backward"


@pytest.mark.parametrize("code", [0x3D, 0x3E, 0x3F, 0x44, 0x45, 0x4C, 0x7C])
def test_unknown_vife_is_kept(code: int) -> None:
    meaning = interpret_vif(0x93, bytes((code,)))
    assert meaning.quantity == f"volume_vife_{code:02x}"
    assert (meaning.unit, meaning.exponent) == ("m3", -3)


def test_combinable_extension_7c_is_kept_with_its_code() -> None:
    assert interpret_vif(0x93, b"\xfc\x10").quantity == "volume_vife_7c10"


# --- manufacturer-specific VIF and VIFE (PROTOCOL_NOTES 7.3, 7.5) -------------------------------


@pytest.mark.parametrize(
    ("vif", "vifes"), [(0x7F, b""), (0xFF, b"\x20"), (0xFF, b"\xf4\x3c"), (0xFF, b"\xfd\x00")]
)
def test_manufacturer_specific_vif_vifes_are_not_interpreted(vif: int, vifes: bytes) -> None:
    meaning = interpret_vif(vif, vifes)
    # the maker's VIFEs name the field (Kamstrup FF 20 info codes), so they stay in the quantity
    assert meaning.quantity == "manufacturer_specific" + (f"_{vifes.hex()}" if vifes else "")
    assert (meaning.unit, meaning.exponent, meaning.error_code) == ("", 0, None)
    assert meaning.kind == "binary"  # the data are the maker's too


def test_manufacturer_specific_vife_stops_interpretation() -> None:
    # EN 13757-3 Table 15, E111 1111: the next VIFEs are the maker's. They are not applied (74
    # would scale by 10^-2, 3C would say backward) but kept in the quantity, which keeps the
    # maker's channels apart; the data keep the VIF's coding (Schneider iEM3000 in the corpus).
    assert interpret_vif(0x93, b"\xff\x74\x3c") == VifMeaning("volume_mfct_743c", "m3", -3)
    assert interpret_vif(0x93, b"\xff\x01") != interpret_vif(0x93, b"\xff\x02")
    assert interpret_vif(0x93, b"\x7f") == VifMeaning("volume_mfct_", "m3", -3)


# --- plain-text VIF (PROTOCOL_NOTES 7.6) --------------------------------------------------------


def test_plain_text_vif_itron_cyble() -> None:
    # libmbus Itron Cyble: `02 7C 09 656D6974202E746162 F210` -> unit "bat. time"
    assert interpret_vif(0x7C, b"", "bat. time") == VifMeaning("plain_text_unit", "bat. time")


def test_plain_text_vif_elvaco_cma10() -> None:
    # libmbus Elvaco CMa10: `02 FC 03 485225 74 2215` -> "%RH", VIFE 74 = x 10^-2
    assert interpret_vif(0xFC, b"\x74", "%RH") == VifMeaning("plain_text_unit", "%RH", -2)


@settings(max_examples=1000)
@given(
    st.integers(min_value=0, max_value=0xFF),
    st.binary(max_size=11),
    st.none() | st.text(max_size=8),
)
def test_any_vif_and_vifes_are_interpreted_without_error(
    vif: int, vifes: bytes, text: str | None
) -> None:
    meaning = interpret_vif(vif, vifes, text)
    assert meaning.quantity
    assert meaning.kind in ("number", "date", "datetime", "time", "text", "binary", "dst")
