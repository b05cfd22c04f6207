"""The wireless M-Bus encoder: the inverse of wmbus_frame.open_wmbus.

Builds a CRC-stripped frame from its layers (EN 13757-4 DLL and ELL, EN 13757-7 AFL and TPL)
and encrypts it with security mode 5 or 7 and, when the ELL's session number asks for it,
AES-128-CTR. wmbus_link.add_crcs_a / add_crcs_b add the link CRCs. firmware_sim and the tests
build their frames here.
"""

from __future__ import annotations

from dataclasses import replace

from decoders.afl import FCL_MAC, Afl, encode_afl
from decoders.ell import Ell, encode_ell
from decoders.manufacturer import encode_id
from decoders.security import (
    BLOCK,
    CMAC_AUTH_TYPES,
    MARKER,
    ZERO_IV,
    afl_mac,
    cbc_encrypt,
    mode5_iv,
    mode7_keys,
)
from decoders.telegram import Address, TplHeader
from decoders.tpl import (
    COMPACT_CIS,
    SECURITY_MODE_CBC_IV,
    SECURITY_MODE_CBC_KDF,
    encode_tpl,
    with_blocks,
)
from decoders.wmbus_link import encode_dll
from metergate.errors import DecodeError, MissingKeyError, UnsupportedError

FILLER = 0x2F  # PROTOCOL_NOTES §3, §7.1: idle filler, pads the last encrypted block


def plaintext_block(apl: bytes, ci: int) -> bytes:
    """What gets encrypted: the 2F2F marker, the APL and 2F fillers up to whole blocks.

    A full APL that already starts with 2F2F keeps it; a compact APL always gets the marker
    in front of its format signature (PROTOCOL_NOTES §3, §6.1).
    """
    if ci in COMPACT_CIS or not apl.startswith(MARKER):
        apl = MARKER + apl
    return apl + bytes([FILLER]) * (-len(apl) % BLOCK)


def _seal_tpl(
    tpl: TplHeader,
    apl: bytes,
    tail: bytes,
    *,
    address: Address,
    key: bytes | None,
    afl: Afl | None,
) -> tuple[bytes, Afl | None]:
    """TPL header and payload, and the AFL with its MAC filled in for mode 7."""
    mode = tpl.security_mode
    if mode == 0:
        return encode_tpl(tpl) + apl + tail, afl
    if mode not in (SECURITY_MODE_CBC_IV, SECURITY_MODE_CBC_KDF):
        raise UnsupportedError(f"security mode {mode} cannot be sealed")
    if key is None:
        raise MissingKeyError(f"security mode {mode} needs a key")
    plain = plaintext_block(apl, tpl.ci)
    tpl = replace(tpl, config=with_blocks(tpl.config, len(plain) // BLOCK))
    identity = tpl.address or address
    if mode == SECURITY_MODE_CBC_IV:
        cipher = cbc_encrypt(key, mode5_iv(identity, tpl.access_no or 0), plain)
        return encode_tpl(tpl) + cipher + tail, afl
    if afl is None or afl.counter is None:
        raise DecodeError("security mode 7 needs an AFL with a message counter")
    kenc, kmac = mode7_keys(key, afl.counter, encode_id(identity.id))
    tpdu = encode_tpl(tpl) + cbc_encrypt(kenc, ZERO_IV, plain) + tail
    if afl.fcl & FCL_MAC:
        if afl.auth_type not in CMAC_AUTH_TYPES:
            raise UnsupportedError(f"AFL authentication type {afl.auth_type} is not AES-CMAC")
        afl = replace(afl, mac=afl_mac(kmac, afl, tpdu))
    return tpdu, afl


def seal_wmbus(
    c_field: int,
    address: Address,
    tpl: TplHeader,
    apl: bytes,
    *,
    key: bytes | None = None,
    ell: Ell | None = None,
    afl: Afl | None = None,
    tail: bytes = b"",
) -> bytes:
    """A complete CRC-stripped frame.

    The security mode comes from `tpl.config` (0, 5 or 7); for 5 and 7 the APL is marked,
    padded and encrypted (see plaintext_block) and N in the CFG is set to the block count.
    `tail` is sent in clear after the encrypted blocks. For mode 7, `tpl.config_ext` selects
    KDF-A (0x10) and `afl` must carry the message counter; when its FCL announces a MAC, the
    MAC is computed here. An ELL with ENC = 1 in its session number is AES-CTR encrypted.
    """
    tpdu, afl = _seal_tpl(tpl, apl, tail, address=address, key=key, afl=afl)
    after_ell = (encode_afl(afl) if afl is not None else b"") + tpdu
    if ell is not None:
        after_ell = encode_ell(ell, address, after_ell, key)
    return encode_dll(c_field, address, after_ell)
