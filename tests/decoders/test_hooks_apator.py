"""The Apator hooks on their own: apator162 register lists and NA-1 blocks."""

from __future__ import annotations

import contextlib
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders.hooks import HOOKS, HookInput, apator
from decoders.telegram import Address
from decoders.wmbus_link import make_address
from metergate.errors import DecodeError, MissingKeyError

ADDRESS_162 = make_address("APA", "20240001", 0x05, 0x07)
ADDRESS_NA1 = make_address("APA", "04000001", 0x14, 0x07)
ZERO_KEY = bytes(16)


def _hook(
    payload: bytes, *, ci: int = 0x7A, address: Address = ADDRESS_162, key: bytes | None = None
) -> HookInput:
    return HookInput(b"", ci, payload, address, key)


def test_registered() -> None:
    assert HOOKS["apator162"] is apator.apator162
    assert HOOKS["apatorna1"] is apator.apatorna1


def test_apator162_total_after_other_registers() -> None:
    payload = b"\x2f\x2f" + apator.encode_apator162(
        [(0x43, b"\x6e\x0a"), (0x7B, bytes(49)), (0x10, (3843).to_bytes(4, "little"))]
    )
    assert (len(payload)) % 16 == 0  # padded to whole AES blocks, 2F2F included
    registers = apator.apator162_registers(payload)
    assert [rid for rid, _ in registers] == [0x43, 0x7B, 0x10]
    records = apator.apator162(_hook(payload)).records
    assert [(r.quantity, r.unit, r.value) for r in records] == [("volume", "m3", Decimal("3.843"))]


def test_apator162_without_padding_ends_at_the_check_word() -> None:
    # Register 10 right before the 2-byte check word, no FF padding (apator162.xmq, "W2").
    payload = b"\x0f" + bytes(7) + b"\xa0" + bytes(4) + b"\x10" + (904398).to_bytes(4, "little")
    records = apator.apator162(_hook(payload + b"\x89\x43")).records
    assert records[0].value == Decimal("904.398")


def test_apator162_unknown_register_is_unsupported() -> None:
    payload = b"\x0f" + bytes(7) + b"\x99" + bytes(8)
    with pytest.raises(DecodeError, match="register 99"):
        apator.apator162(_hook(payload))


def test_apator162_register_past_the_end() -> None:
    payload = b"\x0f" + bytes(7) + b"\x10\x01\x02" + b"\x00\x00"
    with pytest.raises(DecodeError, match="runs past"):
        apator.apator162(_hook(payload))


def test_encode_apator162_checks_register_sizes() -> None:
    with pytest.raises(DecodeError):
        apator.encode_apator162([(0x10, b"\x01")])


def _na1_block(count: int, power: int, seconds: int, age: int, delta: int) -> bytes:
    packed = (count >> 4) << 8 | power << 4 | count & 0x0F
    meta = (age >> 8) << 2 | delta & 0x03
    return (
        b"\x00"
        + packed.to_bytes(4, "little")
        + seconds.to_bytes(4, "little")
        + bytes((age & 0xFF, meta, delta >> 2 & 0xFF, delta >> 10 & 0xFF, delta >> 18 & 0xFF))
        + b"\x08\x82"
    )


def test_apatorna1_decrypts_and_unpacks() -> None:
    seconds = int((datetime(2024, 3, 23, 15, 22) - datetime(2000, 1, 1)).total_seconds())
    plain = _na1_block(34531, 1, seconds, 545, 4469)
    payload = apator.encode_apatorna1(
        address=ADDRESS_NA1, key=ZERO_KEY, access_no=0x5B, frame_status=0x01, plain=plain
    )
    assert payload[2:] != plain
    result = apator.apatorna1(_hook(payload, ci=0xA0, address=ADDRESS_NA1, key=ZERO_KEY))
    values = {(r.spec.dif + r.spec.vif).hex(): r.value for r in result.records}
    assert values["0414"] == Decimal("345.310")  # VIF 14: tens of litres
    assert values["4414"] == Decimal("300.620")
    assert values["04ff01"] == datetime(2024, 3, 23, 15, 22)
    assert values["42ff01"] == datetime(2024, 2, 29, 22, 22)
    assert values["02ff02"] == Decimal(545)
    assert values["01fd17"] == Decimal(0x08)
    assert values["41fd17"] == Decimal(0x82)
    assert values["01ff03"] == Decimal(0x01)


def test_apatorna1_needs_a_key() -> None:
    payload = bytes(18)
    with pytest.raises(MissingKeyError):
        apator.apatorna1(_hook(payload, ci=0xA0, address=ADDRESS_NA1))


def test_apatorna1_other_cis_and_short_payloads() -> None:
    with pytest.raises(DecodeError):
        apator.apatorna1(_hook(bytes(18), ci=0xA5, address=ADDRESS_NA1, key=ZERO_KEY))
    with pytest.raises(DecodeError):
        apator.apatorna1(_hook(bytes(17), ci=0xA0, address=ADDRESS_NA1, key=ZERO_KEY))


@given(
    count=st.integers(0, (1 << 28) - 1),
    power=st.integers(0, 3),
    age=st.integers(0, (1 << 14) - 1),
    delta=st.integers(0, (1 << 26) - 1),
)
def test_apatorna1_round_trip(count: int, power: int, age: int, delta: int) -> None:
    plain = _na1_block(count, power, 10**8, age, delta)
    payload = apator.encode_apatorna1(
        address=ADDRESS_NA1, key=ZERO_KEY, access_no=7, frame_status=0, plain=plain
    )
    result = apator.apatorna1(_hook(payload, ci=0xA1, address=ADDRESS_NA1, key=ZERO_KEY))
    total, historic = result.records[0], result.records[2]
    assert total.value == Decimal(count).scaleb(power - 3)
    assert historic.value == Decimal(count - delta).scaleb(power - 3)


@given(st.lists(st.sampled_from(sorted(apator._REGISTER_SIZES)), max_size=6), st.data())
def test_apator162_round_trip(ids: list[int], data: st.DataObject) -> None:
    registers = [
        (
            rid,
            data.draw(
                st.binary(
                    min_size=apator._REGISTER_SIZES[rid], max_size=apator._REGISTER_SIZES[rid]
                )
            ),
        )
        for rid in ids
    ]
    registers = [(rid, raw) for rid, raw in registers if rid != 16]
    total = data.draw(st.integers(0, 0xFFFFFFFF))
    registers.append((0x10, total.to_bytes(4, "little")))
    payload = b"\x2f\x2f" + apator.encode_apator162(registers)
    assert apator.apator162_registers(payload) == registers
    assert apator.apator162(_hook(payload)).records[0].value == Decimal(total).scaleb(-3)


@given(st.binary(max_size=64))
def test_random_payloads_raise_only_decode_errors(payload: bytes) -> None:
    for hook in (apator.apator162, apator.apatorna1):
        with contextlib.suppress(DecodeError):
            hook(_hook(payload, ci=0xA0, address=ADDRESS_NA1, key=ZERO_KEY))
