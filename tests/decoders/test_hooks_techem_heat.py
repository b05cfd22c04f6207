"""The Techem FHKV data III, Compact V and Vario 4.51 hooks (CI A0-A2 payloads)."""

from __future__ import annotations

import contextlib
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders.hooks import HOOKS, HookInput, HookResult, techem_heat
from decoders.telegram import Address
from decoders.wmbus_link import make_address
from metergate.errors import DecodeError

FHKV_69 = make_address("TCH", "11000001", 0x69, 0x80)
FHKV_94 = make_address("TCH", "11000002", 0x94, 0x80)
COMPACT5 = make_address("TCH", "62000001", 0x45, 0x43)
VARIO = make_address("TCH", "58000001", 0x27, 0xC3)


def _values(result: HookResult | None) -> dict[str, object]:
    assert result is not None
    return {(r.spec.dif + r.spec.vif).hex(): r.value for r in result.records}


def test_registered() -> None:
    assert HOOKS["fhkvdataiii"] is techem_heat.fhkvdataiii
    assert HOOKS["compact5"] is techem_heat.compact5
    assert HOOKS["vario451"] is techem_heat.vario451


def test_fhkvdataiii_fields() -> None:
    payload = techem_heat.encode_fhkvdataiii(
        date(2022, 12, 31), 2048, date(2023, 3, 9), 77, room_centi=2105, radiator_centi=3340
    )
    values = _values(techem_heat.fhkvdataiii(HookInput(b"", 0xA0, payload, FHKV_69, None)))
    assert values == {
        "026e": Decimal(77),
        "426e": Decimal(2048),
        "026c": date(2023, 3, 9),
        "426c": date(2022, 12, 31),
        "0265": Decimal("21.05"),
        "0259": Decimal("33.40"),
    }


def test_fhkvdataiii_version_94_has_one_more_byte() -> None:
    payload = techem_heat.encode_fhkvdataiii(
        date(2020, 12, 31),
        45,
        date(2021, 2, 5),
        4,
        room_centi=2237,
        radiator_centi=2360,
        extra_byte=True,
    )
    values = _values(techem_heat.fhkvdataiii(HookInput(b"", 0xA2, payload, FHKV_94, None)))
    assert values["0265"] == Decimal("22.37")
    assert values["0259"] == Decimal("23.60")
    assert values["026c"] == date(2021, 2, 5)


def test_fhkvdataiii_current_date_year_follows_the_billing_date() -> None:
    # Same month and day as the billing date: a year later (fhkvdataiii.xmq, current_year).
    payload = techem_heat.encode_fhkvdataiii(
        date(2023, 6, 30), 0, date(2000, 6, 30), 0, room_centi=0, radiator_centi=0
    )
    values = _values(techem_heat.fhkvdataiii(HookInput(b"", 0xA0, payload, FHKV_69, None)))
    assert values["026c"] == date(2024, 6, 30)
    payload = techem_heat.encode_fhkvdataiii(
        date(2023, 6, 30), 0, date(2000, 7, 1), 0, room_centi=0, radiator_centi=0
    )
    values = _values(techem_heat.fhkvdataiii(HookInput(b"", 0xA0, payload, FHKV_69, None)))
    assert values["026c"] == date(2023, 7, 1)


def test_fhkvdataiii_invalid_billing_date_leaves_both_dates_absent() -> None:
    payload = bytearray(
        techem_heat.encode_fhkvdataiii(
            date(2023, 6, 30), 0, date(2000, 7, 1), 0, room_centi=0, radiator_centi=0
        )
    )
    payload[1:3] = b"\x00\x00"  # day 0, month 0
    values = _values(techem_heat.fhkvdataiii(HookInput(b"", 0xA0, bytes(payload), FHKV_69, None)))
    assert values["426c"] is None
    assert values["026c"] is None


def test_compact5_total_is_billing_value_plus_since() -> None:
    payload = techem_heat.encode_billing_pair(160001, 377, 3)
    values = _values(techem_heat.compact5(HookInput(b"", 0xA1, payload, COMPACT5, None)))
    assert values == {
        "0406": Decimal(160378000),
        "4406": Decimal(160001000),
        "04ff01": Decimal(377000),
    }


def test_vario451_energy_in_megajoules() -> None:
    payload = techem_heat.encode_billing_pair(14000, 812, 2)
    values = _values(techem_heat.vario451(HookInput(b"", 0xA2, payload, VARIO, None)))
    assert values["040e"] == Decimal(14812) * 10**6
    assert values["440e"] == Decimal(14000) * 10**6
    assert values["04ff01"] == Decimal(812) * 10**6


def test_other_cis_go_back_to_the_generic_decoder() -> None:
    assert techem_heat.fhkvdataiii(HookInput(b"", 0x7A, bytes(20), FHKV_69, None)) is None
    assert techem_heat.compact5(HookInput(b"", 0xA0, bytes(20), COMPACT5, None)) is None
    assert techem_heat.vario451(HookInput(b"", 0xA1, bytes(20), VARIO, None)) is None


def test_truncated_payloads() -> None:
    with pytest.raises(DecodeError, match="too short"):
        techem_heat.fhkvdataiii(HookInput(b"", 0xA2, bytes(13), FHKV_94, None))
    with pytest.raises(DecodeError, match="too short"):
        techem_heat.compact5(HookInput(b"", 0xA1, bytes(9), COMPACT5, None))
    with pytest.raises(DecodeError, match="too short"):
        techem_heat.vario451(HookInput(b"", 0xA2, bytes(8), VARIO, None))


def test_encoders_refuse_what_the_layout_cannot_carry() -> None:
    with pytest.raises(DecodeError):
        techem_heat.encode_billing_pair(1 << 24, 0, 3)
    with pytest.raises(DecodeError):
        techem_heat.encode_fhkvdataiii(
            date(2023, 1, 1), 0x10000, date(2023, 2, 1), 0, room_centi=0, radiator_centi=0
        )


@given(st.binary(max_size=40), st.sampled_from([0xA0, 0xA1, 0xA2]))
def test_random_payloads_raise_only_decode_errors(payload: bytes, ci: int) -> None:
    addresses: tuple[Address, ...] = (FHKV_69, FHKV_94, COMPACT5, VARIO)
    for address in addresses:
        for hook in (techem_heat.fhkvdataiii, techem_heat.compact5, techem_heat.vario451):
            with contextlib.suppress(DecodeError):
                hook(HookInput(b"", ci, payload, address, None))
