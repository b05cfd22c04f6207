"""The B METERS RFM-TX1 hook on its own: the scrambled total and the clock of security-mode-16
frames. Every frame here is built with the project's encoders."""

from __future__ import annotations

import contextlib
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders.decode import Decoder
from decoders.hooks import HOOKS, HookInput, bmeters_rfmtx1
from decoders.record_encoder import encode_records
from decoders.telegram import TplHeader
from decoders.tpl import encode_tpl
from decoders.wmbus_link import encode_dll, make_address
from metergate.errors import DecodeError, DecryptionError, FrameError, UnsupportedError
from metergate.profiles import load_profiles

ADDRESS = make_address("BMT", "87654321", 0x05, 0x07)
CLOCK = datetime(2024, 3, 15, 8, 9, 10)
DECODER = Decoder(load_profiles())


def _frame(payload: bytes, access_no: int = 0x5C, config: int = 0x1006) -> bytes:
    header = encode_tpl(TplHeader(ci=0x7A, access_no=access_no, status=0, config=config))
    return encode_dll(0x44, ADDRESS, header + payload)


def _hook(frame: bytes) -> HookInput:
    return HookInput(frame, frame[10], frame[15:], ADDRESS, None)


def test_registered() -> None:
    assert HOOKS["rfmtx1"] is bmeters_rfmtx1.rfmtx1


def test_total_and_clock() -> None:
    frame = _frame(bmeters_rfmtx1.encode_rfmtx1(0x5C, 41234, CLOCK))
    telegram = DECODER.decode(frame)
    assert telegram.profile == "bmeters-rfmtx1"
    assert telegram.security.mode == 16
    assert telegram.security.decrypted
    total, clock = telegram.records
    assert (total.spec.name, total.quantity, total.unit, total.value) == (
        "total",
        "volume",
        "m3",
        Decimal("41.234"),
    )
    assert (clock.spec.name, clock.value) == ("meter_datetime", CLOCK)


def test_the_payload_is_really_scrambled() -> None:
    payload = bmeters_rfmtx1.encode_rfmtx1(0x5C, 41234, CLOCK)
    assert payload[:2] != bmeters_rfmtx1.TOTAL_HEADER
    assert bmeters_rfmtx1.scramble(payload[:6], 0x5C) == bytes.fromhex("0c1334120400")


@given(st.binary(min_size=6, max_size=6), st.integers(0, 255))
def test_scramble_is_its_own_inverse(data: bytes, access_no: int) -> None:
    once = bmeters_rfmtx1.scramble(data, access_no)
    assert bmeters_rfmtx1.scramble(once, access_no) == data


@given(
    st.integers(0, 255),
    st.integers(0, 99_999_999),
    st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31, 23, 59, 59)),
    st.binary(min_size=7, max_size=7),
    st.binary(max_size=40),
)
def test_encode_then_decode(
    access_no: int, litres: int, clock: datetime, middle: bytes, tail: bytes
) -> None:
    clock = clock.replace(microsecond=0)
    frame = _frame(
        bmeters_rfmtx1.encode_rfmtx1(access_no, litres, clock, middle=middle, tail=tail),
        access_no,
    )
    result = bmeters_rfmtx1.rfmtx1(_hook(frame))
    assert result is not None
    assert [r.value for r in result.records] == [Decimal(litres).scaleb(-3), clock]


def test_wrong_access_number_fails_the_check() -> None:
    payload = bmeters_rfmtx1.encode_rfmtx1(0x5C, 41234, CLOCK)
    with pytest.raises(DecryptionError, match="0c13"):
        bmeters_rfmtx1.rfmtx1(_hook(_frame(payload, access_no=0x5D)))


def test_invalid_clock_is_kept_without_value() -> None:
    payload = bytearray(bmeters_rfmtx1.encode_rfmtx1(0x5C, 41234, CLOCK))
    payload[bmeters_rfmtx1.CLOCK.start + 4] = 0x13  # month 13
    result = bmeters_rfmtx1.rfmtx1(_hook(_frame(bytes(payload))))
    assert result is not None
    assert result.records[1].value is None
    payload[bmeters_rfmtx1.CLOCK.start] = 0x5A  # not BCD
    result = bmeters_rfmtx1.rfmtx1(_hook(_frame(bytes(payload))))
    assert result is not None
    assert result.records[1].value is None


def test_short_payload() -> None:
    payload = bmeters_rfmtx1.encode_rfmtx1(0x5C, 41234, CLOCK, tail=b"")
    with pytest.raises(FrameError, match="needs 19 bytes"):
        bmeters_rfmtx1.rfmtx1(_hook(_frame(payload[:-1])))


def test_other_frames_go_to_the_generic_decoder() -> None:
    plain = _frame(encode_records([(b"\x0c\x13", Decimal("1.5"))]), config=0)
    assert bmeters_rfmtx1.rfmtx1(_hook(plain)) is None
    assert [r.value for r in DECODER.decode(plain).records] == [Decimal("1.5")]
    other_mode = _frame(bytes(30), config=0x1106)  # mode 17: not this scrambling
    assert bmeters_rfmtx1.rfmtx1(_hook(other_mode)) is None
    with pytest.raises(UnsupportedError, match="security mode 17"):
        DECODER.decode(other_mode)
    stored_plain = _frame(b"\x2f\x2f" + encode_records([(b"\x0c\x13", Decimal("2.5"))]))
    assert bmeters_rfmtx1.rfmtx1(_hook(stored_plain)) is None
    assert [r.value for r in DECODER.decode(stored_plain).records] == [Decimal("2.5")]
    no_tpl = encode_dll(0x44, ADDRESS, b"\x78" + bytes(30))
    assert bmeters_rfmtx1.rfmtx1(HookInput(no_tpl, 0x78, no_tpl[11:], ADDRESS, None)) is None


def test_encode_refuses_what_the_frame_cannot_carry() -> None:
    with pytest.raises(DecodeError):
        bmeters_rfmtx1.encode_rfmtx1(0x5C, 10**8, CLOCK)
    with pytest.raises(DecodeError):
        bmeters_rfmtx1.encode_rfmtx1(0x5C, -1, CLOCK)
    with pytest.raises(DecodeError):
        bmeters_rfmtx1.encode_rfmtx1(0x5C, 1, datetime(1999, 1, 1))
    with pytest.raises(DecodeError):
        bmeters_rfmtx1.encode_rfmtx1(0x5C, 1, CLOCK, middle=bytes(6))
    with pytest.raises(DecodeError):
        bmeters_rfmtx1.scramble(bytes(5), 0)


@given(st.binary(max_size=80), st.sampled_from([0x72, 0x78, 0x7A]), st.integers(0, 80))
def test_random_bytes_raise_only_decode_errors(frame: bytes, ci: int, cut: int) -> None:
    with contextlib.suppress(DecodeError):
        bmeters_rfmtx1.rfmtx1(HookInput(frame, ci, frame[cut:], ADDRESS, None))


@given(st.integers(0, 255), st.binary(max_size=60))
def test_random_scrambled_payloads_raise_only_decode_errors(access_no: int, payload: bytes) -> None:
    with contextlib.suppress(DecodeError):
        bmeters_rfmtx1.rfmtx1(_hook(_frame(payload, access_no)))


_VECTOR = _frame(bmeters_rfmtx1.encode_rfmtx1(0x5C, 41234, CLOCK))


@given(st.integers(0, len(_VECTOR) - 1), st.integers(0, 7))
def test_bit_flips_raise_only_decode_errors(position: int, bit: int) -> None:
    flipped = bytearray(_VECTOR)
    flipped[position] ^= 1 << bit
    with contextlib.suppress(DecodeError):
        DECODER.decode(bytes(flipped))


@given(st.integers(1, len(_VECTOR) - 1))
def test_truncations_raise_only_decode_errors(size: int) -> None:
    with contextlib.suppress(DecodeError):
        DECODER.decode(bytes((size - 1,)) + _VECTOR[1:size])
