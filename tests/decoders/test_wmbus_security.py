"""AES primitives and the TPL security modes 5 and 7 (decoders/security.py)."""

from __future__ import annotations

import pytest
from Crypto.Cipher import AES
from Crypto.Hash import CMAC
from hypothesis import given
from hypothesis import strategies as st

from decoders.afl import Afl
from decoders.security import (
    ZERO_IV,
    afl_mac,
    cbc_decrypt,
    cbc_encrypt,
    cmac,
    ctr_crypt,
    kdf_a,
    mode5_iv,
    mode7_keys,
    open_tpl_security,
)
from decoders.telegram import SecurityInfo, TplHeader
from decoders.tpl import parse_tpl
from decoders.wmbus_link import strip_crcs
from metergate.errors import DecryptionError, FrameError, MissingKeyError, UnsupportedError
from tests.decoders.wmbus_vectors import (
    SENSOSTAR_B,
    SENSOSTAR_KENC,
    SENSOSTAR_KEY,
    SENSOSTAR_KMAC,
    SENSOSTAR_MAC,
    WATERSTARM,
    WATERSTARM_KEY,
    WATERSTARM_PLAIN,
    address_of,
    h,
    keys,
)

blocks = st.integers(0, 6).flatmap(lambda n: st.binary(min_size=16 * n, max_size=16 * n))


def test_waterstarm_iv_and_plaintext() -> None:
    # PROTOCOL_NOTES §3 (verified worked example)
    iv = mode5_iv(address_of(WATERSTARM), 0x36)
    assert iv == h("FA12216209200206 3636363636363636")
    assert cbc_decrypt(WATERSTARM_KEY, iv, WATERSTARM[15:47]) == WATERSTARM_PLAIN


def test_sensostar_kdf_and_mac() -> None:
    # PROTOCOL_NOTES §4.5 (verified worked example): KDF-A input, Kenc, Kmac and the MAC.
    counter, ident = 0x025E89, h("04430543")
    assert kdf_a(SENSOSTAR_KEY, 0, counter, ident) == SENSOSTAR_KENC
    assert mode7_keys(SENSOSTAR_KEY, counter, ident) == (SENSOSTAR_KENC, SENSOSTAR_KMAC)
    assert cmac(SENSOSTAR_KEY, h("00 895E0200 04430543 07070707070707")) == SENSOSTAR_KENC
    stripped, _ = strip_crcs(SENSOSTAR_B)
    afl = Afl(fcl=0x2C00, mcl=0x25, counter=counter, mac=SENSOSTAR_MAC)
    assert afl_mac(SENSOSTAR_KMAC, afl, stripped[30:]) == SENSOSTAR_MAC
    plain = cbc_decrypt(SENSOSTAR_KENC, ZERO_IV, stripped[36 : 36 + 144])
    assert plain.startswith(h("2F2F 046D 3A2A283C"))


RFC4493_KEY = h("2b7e151628aed2a6abf7158809cf4f3c")
RFC4493_MESSAGE = h(
    "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710"
)


@pytest.mark.parametrize(
    ("length", "mac"),
    [
        (0, "bb1d6929e95937287fa37d129b756746"),  # RFC 4493 §4, examples 1-4
        (16, "070a16b46b4d4144f79bdd9dd04a287c"),
        (40, "dfa66747de9ae63030ca32611497c827"),
        (64, "51f0bebf7e3b9d92fc49741779363cfe"),
    ],
)
def test_rfc4493_cmac(length: int, mac: str) -> None:
    assert cmac(RFC4493_KEY, RFC4493_MESSAGE[:length]) == h(mac)


@given(key=st.binary(min_size=16, max_size=16), data=st.binary(max_size=80))
def test_cmac_agrees_with_pycryptodome(key: bytes, data: bytes) -> None:
    assert cmac(key, data) == CMAC.new(key, msg=data, ciphermod=AES).digest()


@given(keys, keys, blocks)
def test_cbc_matches_the_library(key: bytes, iv: bytes, data: bytes) -> None:
    reference = AES.new(key, AES.MODE_CBC, iv=iv).encrypt(data) if data else b""
    assert cbc_encrypt(key, iv, data) == reference
    assert cbc_decrypt(key, iv, reference) == data


@given(keys, st.binary(min_size=16, max_size=16), st.binary(max_size=70))
def test_ctr_matches_the_library(key: bytes, counter: bytes, data: bytes) -> None:
    start = int.from_bytes(counter, "big") % ((1 << 128) - 8)  # the library refuses to wrap
    block = start.to_bytes(16, "big")
    reference = AES.new(key, AES.MODE_CTR, nonce=b"", initial_value=block).encrypt(data)
    assert ctr_crypt(key, block, data) == reference
    assert ctr_crypt(key, block, reference) == data


def test_ctr_counter_wraps_at_128_bits() -> None:
    key = bytes(range(16))
    top = b"\xff" * 16
    stream = ctr_crypt(key, top, bytes(32))
    ecb = AES.new(key, AES.MODE_ECB)
    assert stream == ecb.encrypt(top) + ecb.encrypt(bytes(16))


def test_key_of_wrong_length() -> None:
    with pytest.raises(DecryptionError):
        cbc_decrypt(b"short", ZERO_IV, bytes(16))
    with pytest.raises(DecryptionError):
        cmac(bytes(17), b"")


def _open(frame: bytes, key: bytes | None) -> tuple[SecurityInfo, bytes]:
    tpl, end = parse_tpl(frame, 10)
    return open_tpl_security(
        frame,
        tpl,
        tpl_offset=10,
        payload_offset=end,
        address=address_of(frame),
        key=key,
        afl=None,
    )


def test_mode5_open() -> None:
    info, apl = _open(WATERSTARM, WATERSTARM_KEY)
    assert info == SecurityInfo(mode=5, encrypted=True, decrypted=True)
    assert apl == WATERSTARM_PLAIN + WATERSTARM[47:]
    with pytest.raises(MissingKeyError):
        _open(WATERSTARM, None)
    with pytest.raises(DecryptionError) as info_error:
        _open(WATERSTARM, bytes(16))
    assert info_error.value.offset == 15


def test_mode5_more_blocks_than_bytes() -> None:
    short = WATERSTARM[:13] + b"\x30" + WATERSTARM[14:40]  # N = 3, 25 bytes follow
    with pytest.raises(FrameError):
        _open(short, WATERSTARM_KEY)


def test_mode7_needs_the_afl_counter() -> None:
    frame = WATERSTARM[:13] + h("2007 10") + WATERSTARM[15:47]
    with pytest.raises(UnsupportedError):
        _open(frame, WATERSTARM_KEY)


def test_other_modes() -> None:
    plain = WATERSTARM[:13] + h("2010") + WATERSTARM_PLAIN
    assert _open(plain, WATERSTARM_KEY)[0] == SecurityInfo(16, False, False)
    scrambled = WATERSTARM[:13] + h("2010") + WATERSTARM[15:]
    with pytest.raises(UnsupportedError):
        _open(scrambled, None)
    des = WATERSTARM[:13] + h("2003") + WATERSTARM[15:]
    with pytest.raises(UnsupportedError):
        _open(des, WATERSTARM_KEY)


def test_header_without_config_is_plain() -> None:
    frame = WATERSTARM[:10] + b"\x78" + WATERSTARM[15:]
    info, apl = open_tpl_security(
        frame,
        TplHeader(ci=0x78),
        tpl_offset=10,
        payload_offset=11,
        address=None,
        key=WATERSTARM_KEY,
        afl=None,
    )
    assert info == SecurityInfo(0, False, False)
    assert apl == WATERSTARM[15:]
