"""Compact frames (decoders.compact): signatures, learned and declared formats, expansion.

Fixed vectors: the Kamstrup pair of PROTOCOL_NOTES.md section 6.2 (wmbusmeters
drivers/src/kamwater.xmq tests 1-2).
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders.compact import CompactFormats, expand_compact, format_signature
from decoders.crc import crc16_en13757
from decoders.records import parse_records
from decoders.telegram import Address
from metergate.errors import DecodeError, FrameError, UnsupportedError

# PROTOCOL_NOTES 6.2
KAMSTRUP_FULL = bytes.fromhex(
    "02FF20 7100 0413 08190000 4413 08190000 615B 7F 6167 13".replace(" ", "")
)
KAMSTRUP_FORMAT = bytes.fromhex("02FF2004134413615B6167")
KAMSTRUP_COMPACT = bytes.fromhex("EDA8 6AB6 710008190000081900007F13".replace(" ", ""))
KAMSTRUP = Address("KAM", "76348799", 0x1B, 0x16, 0x2C2D)


def test_kamstrup_signature_and_full_frame_crc() -> None:
    # PROTOCOL_NOTES 6.2: format CRC 0xA8ED, full-frame CRC 0xB66A, both sent LE
    assert format_signature(KAMSTRUP_FORMAT) == 0xA8ED
    assert crc16_en13757(KAMSTRUP_FULL) == 0xB66A
    assert KAMSTRUP_COMPACT[:2] == (0xA8ED).to_bytes(2, "little")
    assert KAMSTRUP_COMPACT[2:4] == (0xB66A).to_bytes(2, "little")


def test_learn_from_a_full_frame_then_expand_a_compact_one() -> None:
    formats = CompactFormats()
    with pytest.raises(UnsupportedError):
        expand_compact(KAMSTRUP_COMPACT, formats, KAMSTRUP)
    formats.learn(KAMSTRUP, parse_records(KAMSTRUP_FULL).format_bytes)
    assert len(formats) == 1
    full = expand_compact(KAMSTRUP_COMPACT, formats, KAMSTRUP)
    assert full == KAMSTRUP_FULL
    values = [r.value for r in parse_records(full).records]
    assert values == [Decimal(113), Decimal("6.408"), Decimal("6.408"), Decimal(127), Decimal(19)]


def test_learning_twice_keeps_one_format() -> None:
    formats = CompactFormats()
    formats.learn(KAMSTRUP, KAMSTRUP_FORMAT)
    formats.learn(KAMSTRUP, KAMSTRUP_FORMAT)
    formats.learn(KAMSTRUP, b"")  # a frame without records teaches nothing
    assert len(formats) == 1


def test_another_meter_of_the_same_model_uses_the_learned_format() -> None:
    formats = CompactFormats()
    formats.learn(KAMSTRUP, KAMSTRUP_FORMAT)
    sibling = Address("KAM", "11111111", 0x1B, 0x16, 0x2C2D)
    assert expand_compact(KAMSTRUP_COMPACT, formats, sibling) == KAMSTRUP_FULL


@pytest.mark.parametrize(
    "address",
    [
        Address("KAM", "76348799", 0x1C, 0x16, 0x2C2D),  # other version
        Address("KAM", "76348799", 0x1B, 0x07, 0x2C2D),  # other device type
        Address("ELS", "76348799", 0x1B, 0x16, 0x14B3),  # other manufacturer
    ],
)
def test_a_learned_format_is_kept_to_its_model(address: Address) -> None:
    formats = CompactFormats()
    formats.learn(KAMSTRUP, KAMSTRUP_FORMAT)
    with pytest.raises(UnsupportedError):
        expand_compact(KAMSTRUP_COMPACT, formats, address)


def test_unknown_signature() -> None:
    formats = CompactFormats()
    formats.learn(KAMSTRUP, KAMSTRUP_FORMAT)
    other = b"\x00\x00" + KAMSTRUP_COMPACT[2:]
    with pytest.raises(UnsupportedError) as raised:
        expand_compact(other, formats, KAMSTRUP)
    assert raised.value.offset == 0


def test_declared_format_serves_any_model_of_its_manufacturer() -> None:
    formats = CompactFormats()
    formats.declare("KAM", KAMSTRUP_FORMAT)
    for address in (KAMSTRUP, Address("KAM", "22222222", 0x30, 0x07, 0x2C2D)):
        assert expand_compact(KAMSTRUP_COMPACT, formats, address) == KAMSTRUP_FULL
    with pytest.raises(UnsupportedError):
        expand_compact(KAMSTRUP_COMPACT, formats, Address("ELS", "1", 0x1B, 0x16, 0x14B3))


@pytest.mark.parametrize(
    "payload",
    [
        "EDA86AB6 7100081900000819000013",  # a data byte missing
        "EDA86AB6 710008190000081900007F1300",  # a data byte too many
        "EDA86A",  # shorter than its two CRCs
        "EDA86AB6",
    ],
)
def test_data_must_fill_the_format_exactly(payload: str) -> None:
    formats = CompactFormats()
    formats.learn(KAMSTRUP, KAMSTRUP_FORMAT)
    with pytest.raises(FrameError):
        expand_compact(bytes.fromhex(payload.replace(" ", "")), formats, KAMSTRUP)


def test_fillers_after_the_data_are_padding() -> None:
    # CI 7B: the last decrypted block is padded with 2F (PROTOCOL_NOTES 3)
    formats = CompactFormats()
    formats.learn(KAMSTRUP, KAMSTRUP_FORMAT)
    assert expand_compact(KAMSTRUP_COMPACT + b"\x2f\x2f", formats, KAMSTRUP) == KAMSTRUP_FULL


@pytest.mark.parametrize(
    ("fmt", "data", "full"),
    [
        # LVAR text: 3 bytes follow the LVAR byte
        ("0DFD0C0413", "03414243 01000000", "0DFD0C03414243 041301000000"),
        # LVAR E2: 2 binary bytes (EN 13757-3 §6.3.3), not E2 of them
        ("0DFD3B0413", "E2AABB 01000000", "0DFD3BE2AABB 041301000000"),
        # LVAR F0: 16 binary bytes
        ("0DFD3B", "F0" + "11" * 16, "0DFD3BF0" + "11" * 16),
        # DIF 0F: the maker's bytes to the end
        ("04130F", "01000000 AABBCC", "041301000000 0FAABBCC"),
    ],
)
def test_variable_lengths_in_a_format(fmt: str, data: str, full: str) -> None:
    fmt_bytes = bytes.fromhex(fmt)
    full_bytes = bytes.fromhex(full.replace(" ", ""))
    formats = CompactFormats()
    formats.learn(KAMSTRUP, fmt_bytes)
    payload = (
        format_signature(fmt_bytes).to_bytes(2, "little")
        + crc16_en13757(full_bytes).to_bytes(2, "little")
        + bytes.fromhex(data.replace(" ", ""))
    )
    assert expand_compact(payload, formats, KAMSTRUP) == full_bytes
    assert parse_records(full_bytes).format_bytes == fmt_bytes


def test_reserved_lvar_in_compact_data() -> None:
    fmt = bytes.fromhex("0DFD3B")
    formats = CompactFormats()
    formats.learn(KAMSTRUP, fmt)
    payload = format_signature(fmt).to_bytes(2, "little") + b"\x00\x00" + b"\xf7" + bytes(20)
    with pytest.raises(FrameError):
        expand_compact(payload, formats, KAMSTRUP)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=40))
def test_random_compact_data_raises_only_decode_errors(data: bytes) -> None:
    formats = CompactFormats()
    for fmt in (KAMSTRUP_FORMAT, bytes.fromhex("0DFD0C0413"), bytes.fromhex("04130F")):
        formats.learn(KAMSTRUP, fmt)
        payload = format_signature(fmt).to_bytes(2, "little") + data
        try:
            full = expand_compact(payload, formats, KAMSTRUP)
        except DecodeError:
            continue
        parse_records(full)  # what expands is a record stream of the format
