"""The Diehl PRIOS / real-data hook on its own: LFSR, frame kinds, addresses, records."""

from __future__ import annotations

import contextlib
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders.datatypes import encode_date_g
from decoders.decode import Decoder
from decoders.hooks import HOOKS, HookInput, HookResult
from decoders.hooks import diehl_prios as dp
from decoders.manufacturer import decode_id, decode_manufacturer, encode_id, encode_manufacturer
from decoders.record_encoder import encode_records
from decoders.telegram import Address
from metergate.errors import DecodeError
from metergate.profiles import load_profiles

DME = encode_manufacturer("DME")
SAP = encode_manufacturer("SAP")
HYD = encode_manufacturer("HYD")


def _hook_input(frame: bytes, key: bytes | None = None) -> HookInput:
    """What the Decoder hands the hook: the DLL address as sent, the bytes after the CI."""
    m_raw = frame[2] | frame[3] << 8
    address = Address(decode_manufacturer(m_raw), decode_id(frame[4:8]), frame[8], frame[9], m_raw)
    return HookInput(frame, frame[10], frame[11:], address, key)


def _by_header(result: HookResult) -> dict[str, object]:
    return {(r.spec.dif + r.spec.vif).hex(): r.value for r in result.records}


def test_registered() -> None:
    assert HOOKS["diehl_prios"] is dp.decode


def test_keystream_matches_hand_computed_shifts() -> None:
    # Worked by hand from PROTOCOL_NOTES.md 10.2 (new bit = bit 1 ^ 2 ^ 11 ^ 31, 8 shifts per
    # byte). Seed 1: states 2, 5, 11, 23, 46, 92, 185, 370 -> low byte 0x72.
    assert dp.keystream(1, 1) == b"\x72"
    # Seed 0x80000000: bit 31 feeds a 1 and falls off, leaving 1; 7 more shifts as above end on
    # 185 = 0xB9.
    assert dp.keystream(0x80000000, 1) == b"\xb9"
    assert dp.keystream(0, 4) == bytes(4)  # the all-zero state is a fixed point


def test_prios_frame_round_trip() -> None:
    a_field = bytes((0x78, 0x07)) + encode_id("12345678")
    frame = dp.encode_prios(
        m_field=DME,
        a_field=a_field,
        ci=0xA1,
        alarms=bytes((0x13, 0x98, 0x80)),
        total_litres=123456,
        last_month_litres=120000,
        last_month_date=encode_date_g(date(2024, 5, 31)),
    )
    assert dp.frame_kind(frame) == dp.PRIOS
    assert frame[15:] != dp.descramble(frame, dp.DEFAULT_KEYS[0])  # it really is scrambled
    result = dp.decode(_hook_input(frame))
    values = _by_header(result)
    assert values["0413"] == Decimal("123.456")
    assert values["4413"] == Decimal("120.000")
    assert values["426c"] == date(2024, 5, 31)
    assert values["01ff02"] == Decimal(12)  # 0x98 & 0x1F = 24 half-years
    assert values["01ff03"] == Decimal(32)  # 2 ** (3 + 2) seconds
    assert values["03ff01"] == Decimal(0x809813)
    # PRIOS moves the identity: bytes 6-9 are the id, 4-5 version and device type.
    assert result.address == Address("DME", "12345678", 0x78, 0x07, DME)
    assert result.security is not None and result.security.decrypted


def test_sap_prios_keeps_the_id_and_is_a_water_meter() -> None:
    frame = dp.encode_prios(
        m_field=SAP,
        a_field=encode_id("21000042") + bytes((0x11, 0x01)),
        ci=0xA2,
        alarms=bytes((0x81, 0x34, 0x03)),
        total_litres=4321,
        key=dp.DEFAULT_KEYS[1],
    )
    assert dp.frame_kind(frame) == dp.SAP_PRIOS
    result = dp.decode(_hook_input(frame))
    assert result.address == Address("SAP", "21000042", 0, 0x07, SAP)
    values = _by_header(result)
    assert values["0413"] == Decimal("4.321")
    assert "4413" not in values  # a short PRIOS payload carries the total only
    assert values["01ff02"] == Decimal(10)


def test_a_configured_key_replaces_the_defaults() -> None:
    key = bytes.fromhex("0102030405060708")
    frame = dp.encode_prios(
        m_field=DME,
        a_field=bytes(6),
        ci=0xA0,
        alarms=bytes(3),
        total_litres=7,
        key=key,
    )
    assert _by_header(dp.decode(_hook_input(frame, key)))["0413"] == Decimal("0.007")
    with pytest.raises(DecodeError, match="4B"):
        dp.decode(_hook_input(frame))  # neither default key opens it
    # Of a 16-byte AES key the first 8 bytes are the PRIOS key.
    assert _by_header(dp.decode(_hook_input(frame, key + bytes(8))))["0413"] == Decimal("0.007")


def _real_data_head(manufacturer: int = HYD) -> bytes:
    # L (filled in), C 44, M, A-field 8B 07 + id 60000001, CI 7A, ACC 8F, STS 00, CFG low 10.
    head = bytes((0, 0x44)) + manufacturer.to_bytes(2, "little")
    return head + bytes((0x8B, 0x07)) + encode_id("60000001") + bytes((0x7A, 0x8F, 0x00, 0x10))


def test_real_data_is_descrambled_and_checked() -> None:
    records = encode_records(
        [(bytes.fromhex("0413"), Decimal("71.442")), (bytes.fromhex("426c"), date(2021, 3, 31))]
    )
    frame = dp.encode_real_data(_real_data_head(), records)
    assert dp.frame_kind(frame) == dp.REAL_DATA
    assert frame[14] & 0x10  # CFG mode >= 16
    result = dp.decode(_hook_input(frame))
    assert _by_header(result) == {"0413": Decimal("71.442"), "426c": date(2021, 3, 31)}
    assert result.address == Address("HYD", "60000001", 0x8B, 0x07, HYD)
    assert result.security is not None and result.security.decrypted


def test_real_data_stored_after_descrambling_reads_as_plain() -> None:
    # Stored telegrams (test suites, simulations) were saved descrambled: no key opens them, and
    # the payload is read as it stands (wmbusmeters does the same).
    records = encode_records([(bytes.fromhex("0413"), Decimal("49.373"))])
    head = _real_data_head()
    frame = bytes((len(head) + len(records),)) + head[1:] + bytes((0x18,)) + records
    assert dp.frame_kind(frame) == dp.REAL_DATA
    result = dp.decode(_hook_input(frame))
    assert _by_header(result) == {"0413": Decimal("49.373")}
    assert result.security is None


def test_oms_frames_of_diehl_go_to_the_generic_parser() -> None:
    records = encode_records([(bytes.fromhex("0c13"), Decimal("1.174"))])
    head = bytes((0, 0x44)) + DME.to_bytes(2, "little") + encode_id("64646464")
    frame = head + bytes((0x70, 0x07, 0x7A, 0x01, 0x00, 0x00, 0x00)) + records
    frame = bytes((len(frame) - 1,)) + frame[1:]
    assert dp.frame_kind(frame) == dp.OMS
    hook = HookInput(frame, 0x7A, records, _hook_input(frame).address, None)
    assert dp.decode(hook) is None
    telegram = Decoder(load_profiles()).decode(frame, link_format="none")
    assert [(r.spec.dif + r.spec.vif).hex() for r in telegram.records] == ["0c13"]
    assert telegram.records[0].value == Decimal("1.174")


def test_a_compact_frame_of_a_diehl_meter_expands_with_the_format_of_its_full_frame() -> None:
    # A simulated Diehl meter (firmware_sim): the full frame teaches the format that the
    # compact one (CI 7B) refers to; the hook must leave both to the generic path.
    full = bytes.fromhex(
        "3444a5117501490610067a04100000046d0328413204133c840d0004933c00000000023b220002fd17"
        "0100426c5f31441364830d00"
    )
    compact = bytes.fromhex(
        "2844a5117501490610067b0410000076b6c4d8032841323c840d0000000000220001005f3164830d00"
    )
    decoder = Decoder(load_profiles())
    first = decoder.decode(full, link_format="none")
    second = decoder.decode(compact, link_format="none")
    assert [r.value for r in second.records] == [r.value for r in first.records]


def test_other_manufacturers_and_c_fields_are_not_diehl() -> None:
    frame = dp.encode_prios(
        m_field=encode_manufacturer("KAM"),
        a_field=bytes(6),
        ci=0xA2,
        alarms=bytes(3),
        total_litres=1,
    )
    assert dp.frame_kind(frame) == dp.OMS
    frame = dp.encode_prios(
        m_field=DME, a_field=bytes(6), ci=0xA2, alarms=bytes(3), total_litres=1, c_field=0x08
    )
    assert dp.frame_kind(frame) == dp.OMS


def test_reserved_diehl_cis_are_unsupported() -> None:
    frame = dp.encode_prios(m_field=DME, a_field=bytes(6), ci=0xA8, alarms=bytes(3), total_litres=1)
    with pytest.raises(DecodeError, match="CI a8"):
        dp.decode(_hook_input(frame))


def test_a_prios_frame_too_short_for_its_total() -> None:
    frame = dp.encode_prios(
        m_field=DME, a_field=bytes(6), ci=0xA2, alarms=bytes(3), total_litres=1
    )[:-2]
    with pytest.raises(DecodeError):
        dp.decode(_hook_input(frame))


def test_encoders_refuse_what_they_cannot_carry() -> None:
    with pytest.raises(DecodeError):
        dp.encode_prios(m_field=DME, a_field=bytes(5), ci=0xA2, alarms=bytes(3), total_litres=1)
    with pytest.raises(DecodeError):
        dp.encode_prios(m_field=DME, a_field=bytes(6), ci=0xA2, alarms=bytes(3), total_litres=-1)
    with pytest.raises(DecodeError):
        dp.encode_real_data(bytes(13), b"")


@given(
    total=st.integers(0, 0xFFFFFFFF),
    last=st.integers(0, 0xFFFFFFFF),
    alarms=st.binary(min_size=3, max_size=3),
    ci=st.sampled_from([*range(0xA0, 0xA8), 0xB1, 0xB2, 0xB3]),
    key=st.sampled_from(dp.DEFAULT_KEYS),
)
def test_decode_of_encode_is_identity(
    total: int, last: int, alarms: bytes, ci: int, key: bytes
) -> None:
    frame = dp.encode_prios(
        m_field=DME,
        a_field=bytes((0x78, 0x07)) + encode_id("12345678"),
        ci=ci,
        alarms=alarms,
        total_litres=total,
        last_month_litres=last,
        last_month_date=encode_date_g(date(2024, 1, 31)),
        key=key,
    )
    values = _by_header(dp.decode(_hook_input(frame)))
    assert values["0413"] == Decimal(total).scaleb(-3)
    assert values["4413"] == Decimal(last).scaleb(-3)
    assert values["03ff01"] == Decimal(int.from_bytes(alarms, "little"))


@given(st.binary(min_size=11, max_size=80), st.sampled_from([0x44, 0x46]))
def test_random_diehl_frames_raise_only_decode_errors(body: bytes, c_field: int) -> None:
    frame = bytes((len(body) + 3, c_field)) + DME.to_bytes(2, "little") + body
    with contextlib.suppress(DecodeError):
        dp.decode(_hook_input(frame))


@given(st.data())
def test_bit_flips_and_truncations_raise_only_decode_errors(data: st.DataObject) -> None:
    frame = bytearray(
        dp.encode_prios(
            m_field=HYD,
            a_field=bytes(6),
            ci=0xA2,
            alarms=bytes(3),
            total_litres=5,
            last_month_litres=4,
            last_month_date=encode_date_g(date(2020, 2, 29)),
        )
    )
    position = data.draw(st.integers(0, len(frame) - 1))
    frame[position] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(11, len(frame)))
    with contextlib.suppress(DecodeError):
        dp.decode(_hook_input(bytes(frame[:cut])))
