"""The BFW 240 Radio hook: nibble-packed monthly history, big-endian counters, BCD date."""

from __future__ import annotations

import contextlib
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders.hooks import HOOKS, HookInput, bfw
from decoders.wmbus_link import make_address
from metergate.errors import DecodeError

BFW = make_address("BFW", "00700001", 0x02, 0x08)
HISTORY = tuple(range(100, 118))


def _hook(payload: bytes, ci: int = 0x7A) -> HookInput:
    return HookInput(b"", ci, payload, BFW, None)


def _by_storage(payload: bytes) -> dict[tuple[str, int], object]:
    result = bfw.bfw240radio(_hook(payload))
    assert result is not None
    return {(r.quantity, r.storage): r.value for r in result.records}


def test_registered() -> None:
    assert HOOKS["bfw240radio"] is bfw.bfw240radio


def test_counters_history_and_date() -> None:
    payload = bfw.encode_bfw240(512, 700, HISTORY, date(2024, 2, 28))
    assert len(payload) == bfw.PAYLOAD_SIZE
    values = _by_storage(payload)
    assert values[("hca", 0)] == Decimal(512)
    assert values[("hca", 1)] == Decimal(700)
    for month, expected in enumerate(HISTORY):
        assert values[("hca", bfw.STORAGE_FIRST_MONTH + month)] == Decimal(expected)
    assert values[("date", 0)] == date(2024, 2, 28)


def test_packing_by_hand() -> None:
    # Month 0 is byte 36 with the low nibble of byte 35 above it; month 1 is byte 34 with the
    # high nibble of byte 35 (driver_bfw240radio.cc getHistoric).
    payload = bytearray(bfw.encode_bfw240(0, 0, (0,) * 18, date(2021, 3, 1)))
    payload[36], payload[35], payload[34] = 0x21, 0x5A, 0x43
    assert bfw.monthly_values(bytes(payload))[:2] == (0xA21, 0x543)


@given(st.lists(st.integers(0, 0xFFF), min_size=18, max_size=18), st.integers(0, 0xFFFF))
def test_history_round_trips(history: list[int], current: int) -> None:
    payload = bfw.encode_bfw240(current, 0, tuple(history), date(2030, 12, 31))
    assert bfw.monthly_values(payload) == tuple(history)


def test_invalid_date_is_absent() -> None:
    payload = bfw.encode_bfw240(1, 2, HISTORY, date(2024, 2, 28))[:37] + b"\x32\x13\x24"
    assert _by_storage(payload)[("date", 0)] is None


def test_other_frames_go_back_to_the_generic_decoder() -> None:
    payload = bfw.encode_bfw240(1, 2, HISTORY, date(2024, 2, 28))
    assert bfw.bfw240radio(_hook(payload, ci=0x72)) is None
    assert bfw.bfw240radio(_hook(b"\x04\x13" + payload[2:])) is None


def test_truncated_payload() -> None:
    payload = bfw.encode_bfw240(1, 2, HISTORY, date(2024, 2, 28))
    with pytest.raises(DecodeError, match="too short"):
        bfw.bfw240radio(_hook(payload[:39]))


def test_encoder_refuses_what_the_layout_cannot_carry() -> None:
    with pytest.raises(DecodeError):
        bfw.encode_bfw240(0x10000, 0, HISTORY, date(2024, 1, 1))
    with pytest.raises(DecodeError):
        bfw.encode_bfw240(0, 0, (0x1000, *HISTORY[1:]), date(2024, 1, 1))
    with pytest.raises(DecodeError):
        bfw.encode_bfw240(0, 0, HISTORY, date(2100, 1, 1))


@given(st.binary(max_size=60))
def test_random_payloads_raise_only_decode_errors(tail: bytes) -> None:
    with contextlib.suppress(DecodeError):
        bfw.bfw240radio(_hook(b"\x2f\x2f" + tail))
