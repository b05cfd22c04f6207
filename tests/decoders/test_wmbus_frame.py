"""The whole wM-Bus envelope on fixed vectors (decoders/wmbus_frame.py, wmbus_seal.py)."""

from __future__ import annotations

import pytest

from decoders.afl import Afl
from decoders.ell import Ell
from decoders.telegram import SecurityInfo, TplHeader
from decoders.wmbus_frame import Envelope, open_mbus_payload, open_wmbus
from decoders.wmbus_link import add_crcs_a, encode_dll, make_address, strip_crcs
from decoders.wmbus_seal import seal_wmbus
from metergate.errors import (
    DecodeError,
    DecryptionError,
    FrameError,
    MissingKeyError,
    UnsupportedError,
)
from tests.decoders.wmbus_vectors import (
    GWF_WIRED_DATA,
    KAMSTRUP,
    KAMSTRUP_COMPACT_APL,
    KAMSTRUP_KEY,
    KAMSTRUP_PLAIN,
    SENSOSTAR_B,
    SENSOSTAR_KEY,
    SENSOSTAR_MAC,
    SENSOSTAR_TAIL,
    SONTEX_A,
    SONTEX_STRIPPED,
    WATERSTARM,
    WATERSTARM_KEY,
    WATERSTARM_PLAIN,
    WATERSTARM_TAIL,
    address_of,
    h,
)

WATERSTARM_STORED = WATERSTARM[:15] + WATERSTARM_PLAIN + WATERSTARM_TAIL


def test_sontex_plain_format_a() -> None:
    envelope = open_wmbus(SONTEX_A, None)
    assert envelope.link_format == "A"
    assert envelope.frame == SONTEX_STRIPPED
    assert envelope.address.meter_id == "SON-27293981"
    assert envelope.tpl == TplHeader(ci=0x7A, access_no=0x51, status=0, config=0)
    assert envelope.security == SecurityInfo(mode=0, encrypted=False, decrypted=False)
    assert envelope.apl == SONTEX_STRIPPED[15:]
    assert not envelope.compact


def test_waterstarm_mode5() -> None:
    envelope = open_wmbus(WATERSTARM, WATERSTARM_KEY)
    assert envelope.link_address.meter_id == "DWZ-20096221"
    assert envelope.security == SecurityInfo(mode=5, encrypted=True, decrypted=True)
    # The 2F fillers stay; the bytes after the N blocks are plaintext and follow.
    assert envelope.apl == WATERSTARM_PLAIN + WATERSTARM_TAIL
    assert open_wmbus(add_crcs_a(WATERSTARM), WATERSTARM_KEY).apl == envelope.apl


def test_waterstarm_wrong_and_missing_key() -> None:
    with pytest.raises(DecryptionError, match="2F2F"):
        open_wmbus(WATERSTARM, bytes(16))
    with pytest.raises(MissingKeyError) as info:
        open_wmbus(WATERSTARM, None)
    header = info.value.header
    assert isinstance(header, Envelope)
    assert header.link_address == address_of(WATERSTARM)
    assert header.tpl.access_no == 0x36
    assert header.apl == b""
    assert header.security == SecurityInfo(mode=5, encrypted=True, decrypted=False)


def test_waterstarm_stored_plaintext() -> None:
    envelope = open_wmbus(WATERSTARM_STORED, None)
    assert envelope.security == SecurityInfo(mode=5, encrypted=False, decrypted=False)
    assert envelope.apl == WATERSTARM_PLAIN + WATERSTARM_TAIL
    with pytest.raises(DecryptionError):
        open_wmbus(WATERSTARM_STORED, WATERSTARM_KEY)


def test_waterstarm_seal_reproduces_the_frame() -> None:
    tpl = TplHeader(ci=0x7A, access_no=0x36, status=0, config=0x2500)
    apl = WATERSTARM_PLAIN.rstrip(b"\x2f")
    sealed = seal_wmbus(
        0x44, address_of(WATERSTARM), tpl, apl, key=WATERSTARM_KEY, tail=WATERSTARM_TAIL
    )
    assert sealed == WATERSTARM


def test_sensostar_mode7_format_b() -> None:
    # PROTOCOL_NOTES §4.5 (verified worked example)
    envelope = open_wmbus(SENSOSTAR_B, SENSOSTAR_KEY)
    assert envelope.link_format == "B"
    assert envelope.ell == Ell(ci=0x8C, cc=0x20, access_no=0x0E)
    assert envelope.afl == Afl(fcl=0x2C00, mcl=0x25, counter=0x025E89, mac=SENSOSTAR_MAC)
    assert envelope.tpl.config_ext == 0x10
    assert envelope.security == SecurityInfo(
        mode=7, encrypted=True, decrypted=True, mac_verified=True
    )
    assert envelope.apl.startswith(h("2F2F 046D 3A2A283C"))
    assert envelope.apl.endswith(SENSOSTAR_TAIL)
    assert len(envelope.apl) == 144 + len(SENSOSTAR_TAIL)


def test_sensostar_wrong_key_fails_the_mac() -> None:
    with pytest.raises(DecryptionError, match="MAC"):
        open_wmbus(SENSOSTAR_B, bytes(16))
    stripped, _ = strip_crcs(SENSOSTAR_B)
    tampered = bytearray(stripped)
    tampered[-1] ^= 0x01  # plaintext tail: covered by the MAC
    with pytest.raises(DecryptionError, match="MAC"):
        open_wmbus(bytes(tampered), SENSOSTAR_KEY)


def test_sensostar_seal_reproduces_the_frame() -> None:
    envelope = open_wmbus(SENSOSTAR_B, SENSOSTAR_KEY)
    afl = Afl(fcl=0x2C00, mcl=0x25, counter=0x025E89)
    apl = envelope.apl[:144]
    sealed = seal_wmbus(
        envelope.c_field,
        envelope.link_address,
        envelope.tpl,
        apl,
        key=SENSOSTAR_KEY,
        ell=envelope.ell,
        afl=afl,
        tail=SENSOSTAR_TAIL,
    )
    assert sealed == envelope.frame


def test_kamstrup_ell_ctr() -> None:
    envelope = open_wmbus(KAMSTRUP, KAMSTRUP_KEY)
    assert envelope.tpl == TplHeader(ci=0x78)
    assert envelope.security == SecurityInfo(mode=0, encrypted=True, decrypted=True, layer="ell")
    assert envelope.apl == KAMSTRUP_PLAIN[3:]
    assert envelope.frame == KAMSTRUP
    assert (
        seal_wmbus(
            0x44,
            envelope.link_address,
            envelope.tpl,
            envelope.apl,
            key=KAMSTRUP_KEY,
            ell=envelope.ell,
        )
        == KAMSTRUP
    )


def test_kamstrup_wrong_and_missing_key() -> None:
    with pytest.raises(DecryptionError):
        open_wmbus(KAMSTRUP, bytes(16))
    with pytest.raises(MissingKeyError) as info:
        open_wmbus(KAMSTRUP, None)
    header = info.value.header
    assert isinstance(header, Envelope)
    assert header.link_address.meter_id == "KAM-76348799"
    assert header.ell is not None and header.ell.session == 0x21AC7CD3
    assert header.security == SecurityInfo(0, encrypted=True, decrypted=False, layer="ell")
    assert header.apl == b""


def test_kamstrup_stored_plaintext() -> None:
    stored = KAMSTRUP[:17] + KAMSTRUP_PLAIN
    envelope = open_wmbus(stored, None)
    assert envelope.security == SecurityInfo(0, encrypted=False, decrypted=False, layer="ell")
    assert envelope.apl == KAMSTRUP_PLAIN[3:]
    with pytest.raises(DecryptionError):
        open_wmbus(stored, KAMSTRUP_KEY)


def test_compact_frame_starts_at_the_signature() -> None:
    # PROTOCOL_NOTES §6.2: CI 79 then signature ED A8, full-frame CRC 6A B6, data.
    address = address_of(KAMSTRUP)
    frame = encode_dll(0x44, address, b"\x79" + KAMSTRUP_COMPACT_APL)
    envelope = open_wmbus(frame, None)
    assert envelope.compact
    assert envelope.apl == KAMSTRUP_COMPACT_APL
    tpl = TplHeader(ci=0x7B, access_no=1, status=0, config=0x0500)
    sealed = seal_wmbus(0x44, address, tpl, KAMSTRUP_COMPACT_APL, key=KAMSTRUP_KEY)
    opened = open_wmbus(sealed, KAMSTRUP_KEY)
    assert opened.compact
    # 2F2F marker + 16 bytes pad to two blocks; the marker goes, the fillers stay.
    assert opened.apl == KAMSTRUP_COMPACT_APL + b"\x2f" * 14


@pytest.mark.parametrize("ci", [0xA0, 0xA2, 0xB7, 0x71])
def test_manufacturer_ci_goes_to_a_hook(ci: int) -> None:
    frame = encode_dll(0x44, make_address("DME", "12345678", 1, 7), bytes([ci]) + b"\x4b\x01")
    envelope = open_wmbus(frame, WATERSTARM_KEY)
    assert envelope.tpl == TplHeader(ci=ci)
    assert envelope.apl == b"\x4b\x01"
    assert envelope.security == SecurityInfo(0, False, False)


@pytest.mark.parametrize("body", ["55 00", "70 01", "81 1D 7A", "8C 20", "90 02 0000", ""])
def test_other_cis_and_endings(body: str) -> None:
    frame = encode_dll(0x44, make_address("DME", "12345678", 1, 7), h(body))
    with pytest.raises(DecodeError) as info:
        open_wmbus(frame, None)
    assert isinstance(info.value, (UnsupportedError, FrameError))


def test_mode16_plain_and_scrambled() -> None:
    plain = WATERSTARM[:13] + h("2010") + WATERSTARM_PLAIN
    plain = bytes([len(plain) - 1]) + plain[1:]
    assert open_wmbus(plain, None).security == SecurityInfo(16, False, False)
    scrambled = bytes([len(plain) - 1]) + plain[1:15] + bytes(len(plain) - 15)
    # A manufacturer mode's payload goes on unopened, for the maker's hook (decode.py refuses
    # it when no profile has one).
    envelope = open_wmbus(scrambled, None)
    assert envelope.security == SecurityInfo(16, True, False)
    assert envelope.apl == scrambled[15:]


def test_wired_long_header_payloads() -> None:
    # PROTOCOL_NOTES §8.1: GWF MTKcoder answers CI 72 unencrypted.
    tpl, info, apl = open_mbus_payload(0x72, GWF_WIRED_DATA, None)
    assert tpl.address is not None and tpl.address.meter_id == "GWF-00182007"
    assert info == SecurityInfo(0, False, False)
    assert apl == GWF_WIRED_DATA[12:]
    with pytest.raises(UnsupportedError):
        open_mbus_payload(0x73, GWF_WIRED_DATA, None)


def test_wired_mode5_uses_the_long_header_address() -> None:
    address = make_address("GWF", "00182007", 0x35, 0x07)
    tpl = TplHeader(ci=0x72, access_no=0x4C, status=0, config=0x0500, address=address)
    # The wM-Bus sealer builds the same TPDU; a different DLL address proves the IV source.
    sealed = seal_wmbus(
        0x08, make_address("ABB", "99999999", 1, 2), tpl, h("0C16 69020000"), key=KAMSTRUP_KEY
    )
    tpdu = sealed[10:]
    got_tpl, info, apl = open_mbus_payload(tpdu[0], tpdu[1:], KAMSTRUP_KEY)
    assert got_tpl.address == address
    assert info == SecurityInfo(5, True, True)
    assert apl.startswith(h("2F2F 0C16 69020000 2F"))
    with pytest.raises(MissingKeyError) as missing:
        open_mbus_payload(tpdu[0], tpdu[1:], None)
    assert missing.value.header == got_tpl
