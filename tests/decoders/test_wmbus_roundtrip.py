"""seal_wmbus -> open_wmbus round trips over every layer combination, and robustness: random
bytes, truncations and bit flips raise nothing but DecodeError subclasses."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from decoders.afl import FCL_MAC, Afl
from decoders.ell import Ell
from decoders.telegram import Address, SecurityInfo, TplHeader
from decoders.tpl import COMPACT_CIS, with_blocks
from decoders.wmbus_frame import Envelope, open_wmbus
from decoders.wmbus_link import add_crcs_a, add_crcs_b, strip_crcs
from decoders.wmbus_seal import plaintext_block, seal_wmbus
from metergate.errors import DecodeError, DecryptionError, MissingKeyError
from tests.decoders.wmbus_vectors import FIXED_FRAMES, addresses, afls, ells, keys, tpl_headers


@dataclass(frozen=True)
class Case:
    c_field: int
    address: Address
    tpl: TplHeader
    apl: bytes
    tail: bytes
    key: bytes
    ell: Ell | None
    afl: Afl | None
    link_format: str

    @property
    def mode(self) -> int:
        return self.tpl.security_mode

    @property
    def ctr(self) -> bool:
        return self.ell is not None and self.ell.encryption == 1

    def sealed(self) -> bytes:
        stripped = seal_wmbus(
            self.c_field,
            self.address,
            self.tpl,
            self.apl,
            key=self.key,
            ell=self.ell,
            afl=self.afl,
            tail=self.tail,
        )
        if self.link_format == "A":
            return add_crcs_a(stripped)
        if self.link_format == "B":
            return add_crcs_b(stripped)
        return stripped


@st.composite
def cases(draw: st.DrawFn) -> Case:
    mode = draw(st.sampled_from([0, 5, 7]))
    ell_kind = draw(st.sampled_from(["none", "plain", "ctr"]))
    ell = None if ell_kind == "none" else draw(ells(ell_kind == "ctr"))
    afl = draw(afls(mode)) if mode == 7 else draw(st.none() | afls(mode))
    return Case(
        c_field=draw(st.integers(0, 0xFF)),
        address=draw(addresses),
        tpl=draw(tpl_headers(mode)),
        apl=draw(st.binary(max_size=100)),
        tail=draw(st.binary(max_size=8)) if mode else b"",
        key=draw(keys),
        ell=ell,
        afl=afl,
        link_format=draw(st.sampled_from(["A", "B", "none"])),
    )


def expected_apl(case: Case) -> bytes:
    if case.mode == 0:
        return case.apl
    block = plaintext_block(case.apl, case.tpl.ci)
    return (block[2:] if case.tpl.ci in COMPACT_CIS else block) + case.tail


def expected_security(case: Case) -> SecurityInfo:
    if case.mode == 0:
        if case.ctr:
            return SecurityInfo(0, encrypted=True, decrypted=True, layer="ell")
        return SecurityInfo(0, encrypted=False, decrypted=False)
    verified = True if case.mode == 7 and case.afl and case.afl.fcl & FCL_MAC else None
    layer = "ell+tpl" if case.ctr else "tpl"
    return SecurityInfo(case.mode, True, True, layer=layer, mac_verified=verified)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_seal_then_open(case: Case) -> None:
    framed = case.sealed()
    hint = None if case.link_format != "none" else "none"
    envelope = open_wmbus(framed, case.key, link_format=hint)
    assert envelope.link_format == case.link_format
    assert envelope.c_field == case.c_field
    assert envelope.link_address == case.address
    assert envelope.ell == case.ell
    assert envelope.compact == (case.tpl.ci in COMPACT_CIS)
    assert envelope.security == expected_security(case)
    assert envelope.apl == expected_apl(case)
    tpl = case.tpl
    if case.mode:
        blocks = len(plaintext_block(case.apl, tpl.ci)) // 16
        tpl = replace(tpl, config=with_blocks(tpl.config, blocks))
    assert envelope.tpl == tpl
    afl = case.afl
    if afl is not None and envelope.afl is not None and case.mode == 7 and afl.fcl & FCL_MAC:
        afl = replace(afl, mac=envelope.afl.mac)
    assert envelope.afl == afl


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), keys)
def test_wrong_or_missing_key(case: Case, other_key: bytes) -> None:
    assume(other_key != case.key)
    assume(case.mode or case.ctr)
    framed = case.sealed()
    # A wrong key passes the 2F2F or CRC check, and a ciphertext looks like a stored
    # plaintext, only by chance (about 2^-16); the plaintext cannot come out either way.
    try:
        wrong = open_wmbus(framed, other_key, link_format=case.link_format)
    except DecryptionError:
        pass
    else:
        assert wrong.apl != expected_apl(case)
    try:
        keyless = open_wmbus(framed, None, link_format=case.link_format)
    except MissingKeyError as exc:
        header = exc.header
        assert isinstance(header, Envelope)
        assert header.link_address == case.address
        assert header.ell == case.ell
        assert header.apl == b""
        assert header.security.encrypted
        assert not header.security.decrypted
    else:
        assert keyless.apl != expected_apl(case)


@settings(max_examples=150)
@given(cases(), st.data())
def test_sealed_frames_with_bit_flips(case: Case, data: st.DataObject) -> None:
    framed = bytearray(case.sealed())
    for _ in range(data.draw(st.integers(1, 3))):
        bit = data.draw(st.integers(0, len(framed) * 8 - 1))
        framed[bit // 8] ^= 1 << (bit % 8)
    only_decode_errors(bytes(framed), case.key)


def only_decode_errors(frame: bytes, key: bytes | None) -> None:
    """open_wmbus either opens the frame or raises a DecodeError subclass; pytest reports any
    other exception as a failure of the calling test."""
    with contextlib.suppress(DecodeError):
        open_wmbus(frame, key)


@given(st.binary(max_size=300), st.none() | keys)
def test_random_bytes(data: bytes, key: bytes | None) -> None:
    only_decode_errors(data, key)


@given(st.binary(min_size=10, max_size=255), st.none() | keys)
def test_random_bytes_with_a_consistent_length(data: bytes, key: bytes | None) -> None:
    only_decode_errors(bytes([len(data)]) + data, key)


def _variants(frame: bytes) -> list[bytes]:
    stripped, _ = strip_crcs(frame)
    return [frame, stripped] if stripped != frame else [frame]


@pytest.mark.parametrize(("frame", "key"), FIXED_FRAMES)
def test_truncations_at_every_length(frame: bytes, key: bytes | None) -> None:
    for variant in _variants(frame):
        for size in range(len(variant)):
            cut = variant[:size]
            only_decode_errors(cut, key)
            only_decode_errors(cut, None)
            if size:
                # L rewritten, so the cut frame gets past the link layer into the others.
                only_decode_errors(bytes([size - 1]) + cut[1:], key)


@pytest.mark.parametrize(("frame", "key"), FIXED_FRAMES)
def test_every_single_bit_flip(frame: bytes, key: bytes | None) -> None:
    for variant in _variants(frame):
        for bit in range(len(variant) * 8):
            flipped = bytearray(variant)
            flipped[bit // 8] ^= 1 << (bit % 8)
            only_decode_errors(bytes(flipped), key)
            only_decode_errors(bytes(flipped), None)
