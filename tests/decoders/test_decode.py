"""The Decoder as a whole: framing dispatch, keys, compact learning, profiles, status flags."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.samples import (
    KEY,
    compact_pair,
    mode5_frame,
    mode7_frame,
    plain_frame,
    sample_frames,
    wired_frame,
)
from decoders.decode import Decoder, standard_flags
from decoders.mbus_fixed import encode_fixed
from decoders.mbus_link import rsp_ud
from decoders.profile import parse_profile
from decoders.record_encoder import encode_records
from decoders.telegram import TplHeader
from decoders.wmbus_link import add_crcs_a, add_crcs_b
from decoders.wmbus_seal import seal_wmbus
from metergate.errors import (
    ChecksumError,
    DecodeError,
    DecryptionError,
    MissingKeyError,
    UnsupportedError,
)
from metergate.profiles import load_profiles

from .conftest import volume_of


def test_plain_mode5_mode7_and_wired_frames_give_the_same_records() -> None:
    decoder = Decoder()
    frames = [
        (plain_frame("42.125"), None),
        (mode5_frame("42.125"), KEY),
        (mode7_frame(), KEY),
        (wired_frame(), None),
    ]
    for frame, key in frames:
        telegram = decoder.decode(frame, key)
        assert telegram.records[1].quantity == "volume"
        assert telegram.records[1].unit == "m3"
    assert volume_of(decoder.decode(plain_frame("42.125"))) == Decimal("42.125")
    assert volume_of(decoder.decode(mode5_frame("42.125"), KEY)) == Decimal("42.125")
    wired = decoder.decode(wired_frame())
    assert (wired.protocol, wired.primary_address, wired.meter_id) == ("mbus", 1, "GWF-00182007")


def test_link_crcs_of_format_a_and_b_are_checked_and_removed() -> None:
    decoder = Decoder()
    frame = plain_frame()
    for link_format, with_crcs in (("A", add_crcs_a(frame)), ("B", add_crcs_b(frame))):
        assert decoder.decode(with_crcs).records == decoder.decode(frame).records
        damaged = bytearray(with_crcs)
        damaged[12] ^= 0x01
        with pytest.raises(ChecksumError):
            decoder.decode(bytes(damaged), link_format=link_format)
    damaged_a = bytearray(add_crcs_a(frame))
    damaged_a[12] ^= 0x01
    with pytest.raises(ChecksumError):  # format A's length gives it away without a hint
        decoder.decode(bytes(damaged_a))


def test_keys_wrong_key_and_missing_key() -> None:
    decoder = Decoder()
    with pytest.raises(DecryptionError):
        decoder.decode(mode5_frame(), bytes(16))
    with pytest.raises(MissingKeyError) as missing:
        decoder.decode(mode5_frame(), None)
    assert missing.value.header is not None  # the header still names the meter
    assert "87654321" in repr(missing.value.header)
    with pytest.raises(DecryptionError):
        decoder.decode(mode7_frame(), bytes(16))


def test_compact_frame_decodes_after_its_full_frame_and_not_before() -> None:
    full, compact = compact_pair()
    with pytest.raises(UnsupportedError, match="not learned"):
        Decoder().decode(compact)
    decoder = Decoder()
    expected = decoder.decode(full).records
    assert decoder.decode(compact).records == expected


def test_a_profile_declares_the_compact_format_in_advance_and_maps_info_codes() -> None:
    _, compact = compact_pair()
    telegram = Decoder(load_profiles()).decode(compact)
    assert telegram.profile == "kamstrup-multical21"
    assert telegram.status.flags == ("dry",)  # info code 0x71: bit 0 DRY
    names = {r.spec.name: r.value for r in telegram.records}
    assert names["total"] == Decimal("6.408")


def test_tpl_status_byte_bits_become_flags() -> None:
    assert standard_flags(0) == set()
    assert standard_flags(0x04) == {"low_battery"}
    assert standard_flags(0x08 | 0x03) == {"permanent_error", "alarm"}
    assert standard_flags(0x10 | 0x01) == {"temporary_error", "busy"}
    tpl = TplHeader(ci=0x7A, access_no=1, status=0x04, config=0)
    frame = seal_wmbus(0x44, _address(), tpl, encode_records([(b"\x04\x13", Decimal(1))]))
    assert Decoder().decode(frame).status.flags == ("low_battery",)


def test_status_bits_of_a_profile() -> None:
    profile = parse_profile(
        """
model = "test-meter"
[detect]
manufacturers = ["ELS"]
[[flags]]
source = "status"
bit = 5
flag = "leak"
""",
        "test.toml",
    )
    from decoders.profile import ProfileSet

    tpl = TplHeader(ci=0x7A, access_no=1, status=0x20, config=0)
    frame = seal_wmbus(0x44, _address(), tpl, encode_records([(b"\x04\x13", Decimal(1))]))
    telegram = Decoder(ProfileSet((profile,))).decode(frame)
    assert telegram.status.flags == ("leak",)
    assert telegram.profile == "test-meter"


def test_wired_application_error_and_fixed_structure() -> None:
    decoder = Decoder()
    error = decoder.decode(rsp_ud(5, 0x70, b"\x08"))
    assert error.application_error == 8
    assert "application_error" in error.status.flags
    fixed = encode_fixed(
        "12345678",
        access_no=3,
        status=0x01,  # binary counters: must not read as the "busy" bit of a TPL status
        medium=7,
        unit_1=0x29,
        counter_1=12345,
        unit_2=0x29,
        counter_2=12000,
    )
    telegram = decoder.decode(rsp_ud(5, 0x73, fixed))
    assert telegram.meter_id == "@@@-12345678"
    assert telegram.tpl.access_no == 3
    assert [r.value for r in telegram.records] == [Decimal("12.345"), Decimal("12.000")]
    assert telegram.status.flags == ()


def test_manufacturer_specific_ci_without_a_hook_is_an_unsupported_error() -> None:
    frame = bytes.fromhex("0E44A511785634121A07A2") + bytes(4)
    with pytest.raises(UnsupportedError, match="manufacturer-specific"):
        Decoder().decode(frame)


def test_empty_and_short_inputs_are_decode_errors() -> None:
    decoder = Decoder()
    for data in (b"", b"\x00", b"\x68", bytes.fromhex("E5"), bytes.fromhex("105B017C16")):
        with pytest.raises(DecodeError):
            decoder.decode(data)


def _address():  # type: ignore[no-untyped-def]
    from bench.samples import water_address

    return replace(water_address(), id="55555555")


def test_a_profiles_default_key_is_tried_when_no_key_is_given() -> None:
    from decoders.profile import ProfileSet

    profile = parse_profile(
        f'model = "defaults"\ndefault_keys = ["{bytes(16).hex()}", "{KEY.hex()}"]\n'
        '[detect]\nmanufacturers = ["ELS"]\n',
        "defaults.toml",
    )
    decoder = Decoder(ProfileSet((profile,)))
    assert volume_of(decoder.decode(mode5_frame("7.000"))) == Decimal("7.000")
    with pytest.raises(DecryptionError):  # a configured key is never second-guessed
        decoder.decode(mode5_frame(), bytes(16))
    with pytest.raises(MissingKeyError):  # no profile default for this maker
        Decoder().decode(mode5_frame())


_SEEDS = [frame for _, frame, _ in sample_frames()]
_PROFILED = Decoder(load_profiles())


@settings(max_examples=1500, deadline=None)
@given(
    seed=st.sampled_from(_SEEDS),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 7)), max_size=4),
    cut=st.integers(0, 400),
    tail=st.binary(max_size=8),
    key=st.one_of(st.none(), st.just(KEY), st.binary(min_size=16, max_size=16)),
)
def test_mutated_frames_raise_only_decode_errors(
    seed: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes, key: bytes | None
) -> None:
    data = bytearray(seed[:cut] + tail)
    for position, bit in flips:
        if data:
            data[position % len(data)] ^= 1 << bit
    with contextlib.suppress(DecodeError):
        _PROFILED.decode(bytes(data), key)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        Decoder().decode(data, KEY)
