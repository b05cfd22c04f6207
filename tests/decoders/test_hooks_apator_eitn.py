"""The Apator E-ITN 30 hook: its 15-byte block after CI A0 or behind the CI B6 prefix."""

from __future__ import annotations

import contextlib
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders.hooks import HOOKS, HookInput, HookResult, apator_eitn
from decoders.wmbus_link import make_address
from metergate.errors import DecodeError

EITN = make_address("APA", "37000001", 0x04, 0x08)
BLOCK = apator_eitn.encode_eitn(
    season_low=0xA1,
    previous=300,
    seal_broken=date(2020, 4, 11),
    current=12,
    today=date(2023, 10, 2),
    previous_mean_256=5000,
    mean_256=5300,
)


def _result(ci: int, payload: bytes) -> HookResult:
    result = apator_eitn.apatoreitn(HookInput(b"", ci, payload, EITN, None))
    assert result is not None
    return result


def _values(result: HookResult) -> dict[str, object]:
    return {(r.spec.dif + r.spec.vif).hex(): r.value for r in result.records}


def test_registered() -> None:
    assert HOOKS["apatoreitn"] is apator_eitn.apatoreitn


def test_block_after_ci_a0() -> None:
    result = _result(0xA0, BLOCK)
    assert _values(result) == {
        "026e": Decimal(12),
        "426e": Decimal(300),
        "026c": date(2023, 10, 2),
        "02ff01": date(2016, 5, 1),  # low byte A1 under the fixed high byte A0
        "02ff02": date(2020, 4, 11),
        "02ff03": Decimal("20.703125"),
        "42ff03": Decimal("19.53125"),
    }
    assert result.flags == {"tamper_before"}


def test_repeated_a0_and_b6_prefix_give_the_same_records() -> None:
    expected = _values(_result(0xA0, BLOCK))
    assert _values(_result(0xA0, b"\xa0" + BLOCK)) == expected
    assert _values(_result(0xB6, b"\x03\x01\x02\x03\xa0" + BLOCK)) == expected
    assert _values(_result(0xB6, b"\x00\xa0" + BLOCK)) == expected


def test_intact_seal() -> None:
    block = apator_eitn.encode_eitn(
        season_low=0xA1,
        previous=1500,
        seal_broken=None,
        current=0,
        today=date(2022, 8, 1),
        previous_mean_256=5800,
        mean_256=6000,
    )
    result = _result(0xA0, block)
    assert result.flags == frozenset()
    assert _values(result)["02ff02"] is None


def test_broken_b6_prefix_and_short_blocks() -> None:
    with pytest.raises(DecodeError, match="A0"):
        apator_eitn.apatoreitn(HookInput(b"", 0xB6, b"\x01\x00\x00" + BLOCK, EITN, None))
    with pytest.raises(DecodeError, match="empty"):
        apator_eitn.apatoreitn(HookInput(b"", 0xB6, b"", EITN, None))
    with pytest.raises(DecodeError, match="too short"):
        apator_eitn.apatoreitn(HookInput(b"", 0xA0, BLOCK[:14], EITN, None))


def test_other_cis_go_back_to_the_generic_decoder() -> None:
    assert apator_eitn.apatoreitn(HookInput(b"", 0x7A, BLOCK, EITN, None)) is None


def test_encoder_refuses_what_the_block_cannot_carry() -> None:
    with pytest.raises(DecodeError):
        apator_eitn.encode_eitn(
            season_low=0x100,
            previous=0,
            seal_broken=None,
            current=0,
            today=date(2022, 1, 1),
            previous_mean_256=0,
            mean_256=0,
        )
    with pytest.raises(DecodeError):
        apator_eitn.encode_eitn(
            season_low=0,
            previous=0x10000,
            seal_broken=None,
            current=0,
            today=date(2022, 1, 1),
            previous_mean_256=0,
            mean_256=0,
        )
    with pytest.raises(DecodeError):
        apator_eitn.encode_eitn(
            season_low=0,
            previous=0,
            seal_broken=None,
            current=0,
            today=date(2040, 1, 1),
            previous_mean_256=0,
            mean_256=0,
        )


@given(st.binary(max_size=40), st.sampled_from([0xA0, 0xB6]))
def test_random_payloads_raise_only_decode_errors(payload: bytes, ci: int) -> None:
    with contextlib.suppress(DecodeError):
        apator_eitn.apatoreitn(HookInput(b"", ci, payload, EITN, None))
