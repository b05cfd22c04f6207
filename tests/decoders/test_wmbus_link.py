"""wM-Bus data link layer: block CRCs of formats A and B, first block (decoders/wmbus_link.py)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from decoders.crc import crc16_en13757
from decoders.telegram import Address
from decoders.wmbus_link import (
    add_crcs_a,
    add_crcs_b,
    encode_dll,
    make_address,
    parse_dll,
    strip_crcs,
)
from metergate.errors import ChecksumError, DecodeError, FrameError
from tests.decoders.wmbus_vectors import (
    SENSOSTAR_B,
    SONTEX_A,
    SONTEX_STRIPPED,
    addresses,
)


def test_crc_catalogue_check_value() -> None:
    # PROTOCOL_NOTES §1.3: CRC-16/EN-13757 check value.
    assert crc16_en13757(b"123456789") == 0xC2B7


def test_sontex_format_a_strips_exactly() -> None:
    # PROTOCOL_NOTES §1.6 (verified worked example)
    stripped, found = strip_crcs(SONTEX_A)
    assert found == "A"
    assert stripped == SONTEX_STRIPPED
    assert stripped[0] == 0x34 == len(stripped) - 1
    assert add_crcs_a(stripped) == SONTEX_A


def test_sontex_first_block() -> None:
    c_field, address = parse_dll(SONTEX_STRIPPED)
    assert c_field == 0x44
    assert address == Address("SON", "27293981", 0x16, 0x08, 0x4DEE)
    assert address.medium == "heat cost allocator"
    assert encode_dll(c_field, address, SONTEX_STRIPPED[10:]) == SONTEX_STRIPPED


@pytest.mark.parametrize(("crc_offset", "block"), [(10, 0), (28, 12), (46, 30), (59, 48)])
def test_format_a_bad_crc_names_its_block(crc_offset: int, block: int) -> None:
    broken = bytearray(SONTEX_A)
    broken[crc_offset] ^= 0x01
    with pytest.raises(ChecksumError) as info:
        strip_crcs(bytes(broken))
    assert info.value.offset == block


def test_sensostar_format_b() -> None:
    # PROTOCOL_NOTES §1.5: L = C2, CRC BE E3 over bytes 0-125, F6 0B over bytes 128-192.
    assert len(SENSOSTAR_B) == 0xC2 + 1
    assert SENSOSTAR_B[126:128] == bytes.fromhex("BEE3")
    assert SENSOSTAR_B[-2:] == bytes.fromhex("F60B")
    stripped, found = strip_crcs(SENSOSTAR_B)
    assert found == "B"
    assert stripped == bytes([190]) + SENSOSTAR_B[1:126] + SENSOSTAR_B[128:-2]
    assert add_crcs_b(stripped) == SENSOSTAR_B


@pytest.mark.parametrize("offset", [126, 127, 193, 194])
def test_format_b_bad_crc_when_expected(offset: int) -> None:
    broken = bytearray(SENSOSTAR_B)
    broken[offset] ^= 0x80
    with pytest.raises(ChecksumError) as info:
        strip_crcs(bytes(broken), expect="B")
    assert info.value.offset == (0 if offset < 128 else 128)
    # Without the hint a format B frame with a bad CRC looks like a stripped frame.
    assert strip_crcs(bytes(broken)) == (bytes(broken), "none")


def test_stripped_frame_passes_through() -> None:
    assert strip_crcs(SONTEX_STRIPPED) == (SONTEX_STRIPPED, "none")
    assert strip_crcs(SONTEX_STRIPPED, expect="none") == (SONTEX_STRIPPED, "none")


@pytest.mark.parametrize(
    ("frame", "expect"),
    [(SONTEX_STRIPPED, "A"), (SONTEX_STRIPPED, "B"), (SONTEX_A, "none"), (SONTEX_A, "B")],
)
def test_wrong_expected_format_is_a_frame_error(frame: bytes, expect: str) -> None:
    with pytest.raises(FrameError):
        strip_crcs(frame, expect=expect)


def test_unknown_expected_format() -> None:
    with pytest.raises(DecodeError):
        strip_crcs(SONTEX_STRIPPED, expect="C")


def test_length_matching_nothing() -> None:
    # More bytes than L says, fitting no CRC layout: decoded as they came, L set to match.
    longer, kind = strip_crcs(SONTEX_STRIPPED + b"\x00")
    assert (longer[0], longer[1:], kind) == (
        len(SONTEX_STRIPPED),
        SONTEX_STRIPPED[1:] + b"\0",
        "none",
    )
    with pytest.raises(FrameError) as info:
        strip_crcs(SONTEX_STRIPPED[:-1])
    assert not isinstance(info.value, ChecksumError)
    with pytest.raises(FrameError):
        strip_crcs(b"")


def test_short_frames_are_frame_errors() -> None:
    with pytest.raises(FrameError):
        parse_dll(bytes([3, 0x44, 0, 0]))
    with pytest.raises(FrameError):
        parse_dll(SONTEX_STRIPPED[:-1])  # L no longer matches


def test_make_address_packs_manufacturer() -> None:
    # PROTOCOL_NOTES §1.2: "KAM" = 0x2C2D.
    address = make_address("KAM", "76348799", 0x1B, 0x16)
    assert address.m_raw == 0x2C2D
    frame = encode_dll(0x44, address, b"\x78")
    assert frame == bytes.fromhex("0A442D2C998734761B1678")
    assert parse_dll(frame) == (0x44, address)


def test_encoders_refuse_what_they_cannot_send() -> None:
    address = make_address("KAM", "76348799", 0x1B, 0x16)
    with pytest.raises(FrameError):
        encode_dll(0x44, address, bytes(247))
    with pytest.raises(DecodeError):
        encode_dll(0x144, address, b"")
    with pytest.raises(FrameError):
        add_crcs_b(encode_dll(0x44, address, bytes(243)))
    with pytest.raises(DecodeError):
        make_address("KAM", "7634879G", 1, 1)


stripped_frames = st.builds(
    encode_dll, st.integers(0, 0xFF), addresses, st.binary(min_size=0, max_size=246)
)


@given(stripped_frames)
def test_format_a_round_trip(stripped: bytes) -> None:
    framed = add_crcs_a(stripped)
    assert strip_crcs(framed) == (stripped, "A")
    assert strip_crcs(framed, expect="A") == (stripped, "A")


@given(stripped_frames)
def test_format_b_round_trip(stripped: bytes) -> None:
    assume(len(stripped) <= 252)
    framed = add_crcs_b(stripped)
    assert framed[0] == len(framed) - 1
    assert strip_crcs(framed) == (stripped, "B")


@given(stripped_frames)
def test_dll_round_trip(stripped: bytes) -> None:
    c_field, address = parse_dll(stripped)
    assert encode_dll(c_field, address, stripped[10:]) == stripped


@given(st.binary(max_size=300), st.sampled_from([None, "A", "B", "none"]))
def test_random_bytes_raise_only_decode_errors(data: bytes, expect: str | None) -> None:
    try:
        stripped, _ = strip_crcs(data, expect=expect)
        parse_dll(stripped)
    except DecodeError:
        pass
