"""TPL headers, ELL and AFL parse/encode (decoders/tpl.py, ell.py, afl.py)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders.afl import Afl, encode_afl, mac_input, parse_afl
from decoders.ell import Ell, counter_block, encode_ell, open_ell, parse_ell
from decoders.telegram import Address, TplHeader
from decoders.tpl import encode_tpl, parse_tpl, with_blocks
from decoders.wmbus_link import link_address_bytes
from metergate.errors import (
    ChecksumError,
    DecodeError,
    DecryptionError,
    FrameError,
    MissingKeyError,
    UnsupportedError,
)
from tests.decoders.wmbus_vectors import (
    GWF_WIRED_DATA,
    KAMSTRUP,
    KAMSTRUP_COUNTER_BLOCK,
    KAMSTRUP_KEY,
    KAMSTRUP_PLAIN,
    SENSOSTAR_B,
    addresses,
    afls,
    ells,
    h,
    keys,
    tpl_headers,
)


def test_short_header_waterstarm() -> None:
    # PROTOCOL_NOTES §2.3 and §3: CFG 20 25 -> S = 1, mode 5, N = 2.
    header, end = parse_tpl(h("7A 36 00 2025 67C9"), 0)
    assert header == TplHeader(ci=0x7A, access_no=0x36, status=0, config=0x2520)
    assert end == 5
    assert header.security_mode == 5
    assert header.encrypted_blocks == 2
    assert encode_tpl(header) == h("7A 36 00 2025")


def test_mode7_header_has_cfg_extension() -> None:
    # PROTOCOL_NOTES §4.5: 7A 0E 00 9007 10 -> mode 7, N = 9, KDFS = 1.
    header, end = parse_tpl(h("7A 0E 00 9007 10 0F8F"), 0)
    assert header.security_mode == 7
    assert header.encrypted_blocks == 9
    assert header.config_ext == 0x10
    assert end == 6


def test_long_header_wired_gwf() -> None:
    # PROTOCOL_NOTES §8.1: ID 00182007, GWF, version 35, medium 07, access 4C.
    header, end = parse_tpl(b"\x72" + GWF_WIRED_DATA, 0)
    assert header.address == Address("GWF", "00182007", 0x35, 0x07, 0x1EE6)
    assert (header.access_no, header.status, header.config) == (0x4C, 0, 0)
    assert end == 13
    assert encode_tpl(header) == b"\x72" + GWF_WIRED_DATA[:12]


@pytest.mark.parametrize("ci", [0x78, 0x79])
def test_no_header(ci: int) -> None:
    assert parse_tpl(bytes([ci, 1, 2]), 0) == (TplHeader(ci=ci), 1)


def test_truncated_and_foreign_headers() -> None:
    with pytest.raises(FrameError):
        parse_tpl(h("7A 36 00 20"), 0)
    with pytest.raises(FrameError):
        parse_tpl(h("7A 36 00 0007"), 0)  # mode 7 without its CFG-extension
    with pytest.raises(FrameError):
        parse_tpl(b"", 0)
    with pytest.raises(UnsupportedError):
        parse_tpl(h("70 01"), 0)


def test_tpl_encoder_checks_its_fields() -> None:
    with pytest.raises(DecodeError):
        encode_tpl(TplHeader(ci=0x7A))
    with pytest.raises(DecodeError):
        encode_tpl(TplHeader(ci=0x72, access_no=1, status=0))
    with pytest.raises(DecodeError):
        encode_tpl(TplHeader(ci=0x7A, access_no=1, status=0, config=0x0700))
    with pytest.raises(DecodeError):
        encode_tpl(TplHeader(ci=0x78, access_no=1))
    with pytest.raises(DecodeError):
        with_blocks(0, 16)


@given(st.sampled_from([0, 5, 7]).flatmap(tpl_headers), st.binary(max_size=4))
def test_tpl_round_trip(header: TplHeader, rest: bytes) -> None:
    encoded = encode_tpl(header)
    assert parse_tpl(encoded + rest, 0) == (header, len(encoded))


def test_kamstrup_ell_counter_block_and_decryption() -> None:
    # PROTOCOL_NOTES §5.3 (verified worked example)
    ell, pos = parse_ell(KAMSTRUP, 10)
    assert ell == Ell(ci=0x8D, cc=0x20, access_no=0x91, session=0x21AC7CD3)
    assert (ell.encryption, ell.session_no) == (1, 3)
    assert pos == 17
    assert counter_block(KAMSTRUP[2:10], ell) == KAMSTRUP_COUNTER_BLOCK
    opened = open_ell(KAMSTRUP, 10, KAMSTRUP_KEY)
    assert opened.offset == 19
    assert opened.payload == KAMSTRUP_PLAIN[2:]
    assert opened.encrypted


def test_counter_block_clears_hop_and_repeat_bits() -> None:
    ell = Ell(ci=0x8D, cc=0xFF, access_no=0, session=0x01020304)
    assert counter_block(bytes(8), ell) == bytes(8) + h("ED 04030201 000000")


def test_ell_key_checks() -> None:
    with pytest.raises(MissingKeyError):
        open_ell(KAMSTRUP, 10, None)
    with pytest.raises(DecryptionError):
        open_ell(KAMSTRUP, 10, bytes(16))
    with pytest.raises(DecryptionError):
        open_ell(KAMSTRUP, 10, bytes(15))


def test_ell_stored_plaintext_and_plain_crc() -> None:
    stored = KAMSTRUP[:17] + KAMSTRUP_PLAIN
    opened = open_ell(stored, 10, None)
    assert (opened.payload, opened.encrypted) == (KAMSTRUP_PLAIN[2:], False)
    with pytest.raises(DecryptionError):
        open_ell(stored, 10, KAMSTRUP_KEY)
    # ENC = 0: the payload CRC is still checked (PROTOCOL_NOTES §5.1).
    clear = bytearray(stored)
    clear[16] = 0x01
    assert open_ell(bytes(clear), 10, None).payload == KAMSTRUP_PLAIN[2:]
    clear[-1] ^= 0x01
    with pytest.raises(ChecksumError):
        open_ell(bytes(clear), 10, None)


def test_ell_unknown_encryption() -> None:
    frame = bytearray(KAMSTRUP)
    frame[16] = 0x41  # ENC = 2
    with pytest.raises(UnsupportedError):
        open_ell(bytes(frame), 10, KAMSTRUP_KEY)


def test_sensostar_ell_without_session() -> None:
    ell, pos = parse_ell(SENSOSTAR_B, 10)
    assert ell == Ell(ci=0x8C, cc=0x20, access_no=0x0E)
    assert pos == 13


@given(st.booleans().flatmap(ells), addresses, st.binary(max_size=40), keys)
def test_ell_round_trip(ell: Ell, link: Address, payload: bytes, key: bytes) -> None:
    frame = bytes(2) + link_address_bytes(link) + encode_ell(ell, link, payload, key)
    opened = open_ell(frame, 10, key)
    assert opened.ell == ell
    assert opened.payload == payload
    assert opened.encrypted == (ell.encryption == 1)


def test_ell_encoder_checks_its_fields() -> None:
    link = Address("KAM", "76348799", 0x1B, 0x16, 0x2C2D)
    with pytest.raises(DecodeError):
        encode_ell(Ell(ci=0x8D, cc=0, access_no=0), link, b"", None)
    with pytest.raises(DecodeError):
        encode_ell(Ell(ci=0x8E, cc=0, access_no=0), link, b"", None)
    with pytest.raises(MissingKeyError):
        encode_ell(Ell(ci=0x8D, cc=0, access_no=0, session=1 << 29), link, b"", None)
    with pytest.raises(UnsupportedError):
        encode_ell(Ell(ci=0x86, cc=0, access_no=0), link, b"", None)


def test_sensostar_afl() -> None:
    # PROTOCOL_NOTES §4.5: FCL 0x2C00, MCL 25 (AT 5, 8-byte MAC), MCR 89 5E 02 00.
    afl, end = parse_afl(SENSOSTAR_B, 13)
    assert afl == Afl(fcl=0x2C00, mcl=0x25, counter=0x025E89, mac=h("3B0877D31DA840B1"))
    assert (afl.auth_type, afl.mac_length, afl.fragment_id) == (5, 8, 0)
    assert end == 30
    assert SENSOSTAR_B[end] == 0x7A
    assert encode_afl(afl) == SENSOSTAR_B[13:30]
    assert mac_input(afl, b"\x7a") == h("25 895E0200 7A")


def test_fragmented_afl_is_unsupported() -> None:
    more = h("90 02 0040")
    with pytest.raises(UnsupportedError):
        parse_afl(more, 0)
    with pytest.raises(UnsupportedError):
        parse_afl(h("90 02 0200"), 0)  # fragment 2 of a longer message


def test_afl_length_mismatch_and_truncation() -> None:
    with pytest.raises(FrameError):
        parse_afl(h("90 03 0000 00"), 0)  # a byte no field claims
    with pytest.raises(FrameError):
        parse_afl(h("90 03 0008 00"), 0)  # MCR announced, 1 byte left
    with pytest.raises(FrameError):
        parse_afl(h("90 05 0000"), 0)
    with pytest.raises(FrameError):
        parse_afl(h("90 02 0004"), 0)  # MAC without MCL
    with pytest.raises(UnsupportedError):
        parse_afl(h("90 03 0024 0A"), 0)  # AT 10 has no MAC length


@given(st.sampled_from([0, 5]).flatmap(afls), st.binary(max_size=4))
def test_afl_round_trip(afl: Afl, rest: bytes) -> None:
    encoded = encode_afl(afl)
    assert parse_afl(encoded + rest, 0) == (afl, len(encoded))


def test_afl_encoder_checks_presence() -> None:
    with pytest.raises(DecodeError):
        encode_afl(Afl(fcl=0x0800))  # MCR bit without a counter
    with pytest.raises(DecodeError):
        encode_afl(Afl(fcl=0x2400, mcl=0x05, mac=b"\x00"))  # AT 5 needs 8 bytes
    with pytest.raises(DecodeError):
        encode_afl(Afl(fcl=0x0800, counter=1 << 32))


@given(st.binary(max_size=40), st.integers(0, 40), st.none() | keys)
def test_layers_on_random_bytes_raise_only_decode_errors(
    data: bytes, offset: int, key: bytes | None
) -> None:
    for parse in (parse_tpl, parse_afl, parse_ell):
        with contextlib.suppress(DecodeError):
            parse(data, offset)
    with contextlib.suppress(DecodeError):
        open_ell(data, offset, key)
