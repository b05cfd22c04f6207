"""The Qundis hook on its own: the walk-by block 0D FF 5F, the link CRC left on a frame, and
frames it hands back. Every frame here is built with the project's encoders."""

from __future__ import annotations

import contextlib
from datetime import date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders.decode import Decoder
from decoders.hooks import HOOKS, HookInput, qundis
from decoders.record_encoder import encode_records
from decoders.records import parse_records
from decoders.telegram import Address, DataRecord, TplHeader
from decoders.tpl import encode_tpl
from decoders.wmbus_link import add_crcs_a, encode_dll, make_address
from metergate.errors import DecodeError, FrameError, UnsupportedError
from metergate.profiles import load_profiles

WATER = make_address("QDS", "21436587", 0x16, 0x07)
HEAT = make_address("QDS", "31425364", 0x47, 0x37)
DECODER = Decoder(load_profiles())


def _short_tpl(config: int = 0) -> bytes:
    return encode_tpl(TplHeader(ci=0x7A, access_no=0x21, status=0, config=config))


def _walk_by_frame(content: bytes, address: Address = WATER) -> bytes:
    apl = qundis.walk_by_record(content) + encode_records(
        [(b"\x04\x6d", datetime(2023, 9, 14, 11, 22))]
    )
    return encode_dll(0x44, address, encode_tpl(TplHeader(ci=0x78)) + apl)


def _by_header(records: tuple[DataRecord, ...]) -> dict[bytes, DataRecord]:
    return {r.spec.dif + r.spec.vif: r for r in records}


def _with_link_crc(body: bytes) -> bytes:
    """The frame with the format A CRC of its last block left on, counted in L."""
    return bytes((len(body) + 1,)) + body[1:] + add_crcs_a(body)[-2:]


def test_registered() -> None:
    assert HOOKS["qundis"] is qundis.qundis


def test_water_walk_by_registers_take_the_standard_headers() -> None:
    content = qundis.encode_walk_by(
        0x13,
        Decimal("57.123"),
        (date(2023, 12, 31), Decimal("50.5")),
        (date(2024, 5, 31), Decimal("56.789")),
        error_date=date(2024, 2, 11),
        monthly=list(range(100, 112)),
    )
    assert len(content) == qundis.WALK_BY_SIZE
    telegram = DECODER.decode(_walk_by_frame(content))
    assert telegram.profile == "qundis-qwater"
    got = _by_header(telegram.records)
    assert got[b"\x0c\x13"].value == Decimal("57.123")
    assert got[b"\x0c\x13"].spec.name == "total"
    assert got[b"\x4c\x13"].value == Decimal("50.5")
    assert got[b"\x4c\x13"].storage == 1
    assert got[b"\xcc\x08\x13"].value == Decimal("56.789")
    assert got[b"\xcc\x08\x13"].storage == 17
    assert got[b"\x42\x6c"].value == date(2023, 12, 31)
    assert got[b"\xc2\x08\x6c"].value == date(2024, 5, 31)
    assert got[b"\x32\x6c"].value == date(2024, 2, 11)
    assert got[b"\x32\x6c"].spec.function == "error"
    # Water meters' monthly consumptions are left undecoded.
    assert not [r for r in telegram.records if r.quantity == "monthly_energy"]


def test_heat_walk_by_takes_the_energy_unit_from_the_block() -> None:
    months: list[int | None] = [None] * 6 + [0, 4500, 3000, 2500, 2000, -5]
    content = qundis.encode_walk_by(
        0x0D,
        Decimal("1.2345e9"),
        (date(2023, 12, 31), Decimal("4.5e8")),
        (date(2024, 3, 31), Decimal("1.2e9")),
        monthly=months,
    )
    telegram = DECODER.decode(_walk_by_frame(content, HEAT))
    assert telegram.profile == "qundis-qheat"
    got = _by_header(telegram.records)
    total = got[b"\x0c\x0d"]
    assert (total.quantity, total.unit, total.value) == ("energy", "J", Decimal(1234500000))
    assert got[b"\x42\x6c"].value == date(2023, 12, 31)
    assert got[b"\x32\x6c"].value is None  # FFFF: no error date
    monthly = {r.storage: r for r in telegram.records if r.quantity == "monthly_energy"}
    assert sorted(monthly) == list(range(1, 13))
    assert {r.unit for r in monthly.values()} == {"J"}
    assert monthly[1].value == Decimal(-500000)  # the last month, signed as sent
    assert monthly[2].value == Decimal(200000000)
    assert monthly[5].value == Decimal(450000000)
    assert monthly[6].value == 0
    assert all(monthly[n].value is None for n in range(7, 13))  # 8000: no value


def test_hca_walk_by() -> None:
    content = qundis.encode_walk_by(
        0x6E, Decimal(55), (date(2022, 12, 31), Decimal(120)), (date(2023, 5, 31), Decimal(40))
    )
    got = _by_header(qundis.walk_by_records(content))
    assert (got[b"\x0c\x6e"].unit, got[b"\x0c\x6e"].value) == ("hca", Decimal(55))
    assert got[b"\x4c\x6e"].value == Decimal(120)
    assert len(got) == 6


@pytest.mark.parametrize("vif", [0x18, 0x6D, 0xFF, 0x7C])
def test_unknown_vif_gives_no_records(vif: int) -> None:
    content = bytearray(
        qundis.encode_walk_by(0x13, Decimal(1), (None, Decimal(0)), (None, Decimal(0)))
    )
    content[9] = vif
    assert qundis.walk_by_records(bytes(content)) == ()


def test_other_sizes_give_no_records() -> None:
    content = qundis.encode_walk_by(0x13, Decimal(1), (None, Decimal(0)), (None, Decimal(0)))
    assert qundis.walk_by_records(content[:-1]) == ()
    assert qundis.walk_by_records(content + b"\x00") == ()


@given(
    vif=st.sampled_from([0x05, 0x06, 0x0D, 0x0E, 0x13, 0x6E]),
    counts=st.lists(st.integers(0, 99_999_999), min_size=3, max_size=3),
    days=st.lists(st.none() | st.dates(date(2000, 1, 1), date(2080, 12, 31)), min_size=3),
    months=st.lists(st.none() | st.integers(-0x7FFF, 0x7FFF), min_size=12, max_size=12),
)
def test_encode_then_decode(
    vif: int, counts: list[int], days: list[date | None], months: list[int | None]
) -> None:
    exponent = {0x05: 2, 0x06: 3, 0x0D: 5, 0x0E: 6, 0x13: -3, 0x6E: 0}[vif]
    total, at_year, at_month = (Decimal(c).scaleb(exponent) for c in counts)
    content = qundis.encode_walk_by(
        vif,
        total,
        (days[0], at_year),
        (days[1], at_month),
        error_date=days[2],
        monthly=months,
    )
    records = qundis.walk_by_records(content)
    v = bytes((vif,))
    got = _by_header(records)
    assert got[b"\x0c" + v].value == total
    assert got[b"\x4c" + v].value == at_year
    assert got[b"\xcc\x08" + v].value == at_month
    assert got[b"\x42\x6c"].value == days[0]
    assert got[b"\xc2\x08\x6c"].value == days[1]
    assert got[b"\x32\x6c"].value == days[2]
    monthly = [r for r in records if r.quantity == "monthly_energy"]
    if vif > 0x0F:
        assert monthly == []
    else:
        decoded = []
        for record in monthly:
            assert record.value is None or isinstance(record.value, Decimal)
            count = None if record.value is None else int(record.value.scaleb(-exponent))
            decoded.append(count)
        assert decoded == months
        assert [r.storage for r in monthly] == list(range(12, 0, -1))


def test_encode_refuses_what_the_block_cannot_carry() -> None:
    none = (None, Decimal(0))
    with pytest.raises(DecodeError):
        qundis.encode_walk_by(0x13, Decimal(10**6), none, none)  # 8 digits of litres
    with pytest.raises(DecodeError):
        qundis.encode_walk_by(0x05, Decimal(100), none, none, monthly=[-0x8000] * 12)
    with pytest.raises(DecodeError):
        qundis.encode_walk_by(0x05, Decimal(100), none, none, monthly=[0] * 11)
    with pytest.raises(DecodeError):
        qundis.encode_walk_by(0x99, Decimal(100), none, none)
    with pytest.raises(DecodeError):
        qundis.encode_walk_by(0x13, Decimal(1), none, none, head=bytes(9))
    with pytest.raises(DecodeError):
        qundis.walk_by_record(bytes(52))


def _standard_body(litres: int) -> bytes:
    apl = encode_records([(b"\x0c\x13", Decimal(litres).scaleb(-3))])
    address = make_address("QDS", "21436587", 0x18, 0x06)
    return encode_dll(0x44, address, _short_tpl() + apl)


def test_link_crc_left_on_is_dropped() -> None:
    frame = _with_link_crc(_standard_body(2468))
    payload = frame[15:]
    result = qundis.qundis(HookInput(frame, 0x7A, payload, WATER, None))
    assert result is not None
    assert [(r.spec.dif + r.spec.vif, r.value) for r in result.records] == [
        (b"\x0c\x13", Decimal("2.468"))
    ]


def test_link_crc_that_breaks_the_parser_is_dropped() -> None:
    # 1034 litres: the CRC is 7D 6F, a DIF of variable length and a VIF with no LVAR after them
    # (found by trying totals until one gave such a CRC).
    frame = _with_link_crc(_standard_body(1034))
    payload = frame[15:]
    with pytest.raises(FrameError):
        parse_records(payload)
    result = qundis.qundis(HookInput(frame, 0x7A, payload, WATER, None))
    assert result is not None
    assert [r.value for r in result.records] == [Decimal("1.034")]


def test_trailing_bytes_that_are_no_crc_are_kept_or_refused() -> None:
    body = _standard_body(2468)
    crc = add_crcs_a(body)[-2:]
    wrong = bytes((crc[0], crc[1] ^ 1))
    frame = bytes((len(body) + 1,)) + body[1:] + wrong
    result = qundis.qundis(HookInput(frame, 0x7A, frame[15:], WATER, None))
    assert result is not None
    assert result.records[-1].raw == wrong
    assert qundis.without_stray_crc(frame, frame[15:]) is None
    broken = _with_link_crc(_standard_body(1034))[:-1] + b"\x00"
    with pytest.raises(FrameError):
        qundis.qundis(HookInput(broken, 0x7A, broken[15:], WATER, None))


def test_manufacturer_security_mode_is_handed_back() -> None:
    frame = encode_dll(0x44, WATER, _short_tpl(config=0x1000) + bytes(20))
    assert qundis.qundis(HookInput(frame, 0x7A, frame[15:], WATER, None)) is None
    with pytest.raises(UnsupportedError, match="security mode 16"):
        DECODER.decode(frame)


@given(st.binary(max_size=80), st.sampled_from([0x72, 0x78, 0x7A]), st.integers(0, 80))
def test_random_bytes_raise_only_decode_errors(frame: bytes, ci: int, cut: int) -> None:
    with contextlib.suppress(DecodeError):
        qundis.qundis(HookInput(frame, ci, frame[cut:], WATER, None))


@given(st.binary(max_size=80), st.sampled_from([0x78, 0x7A]))
def test_random_payloads_raise_only_decode_errors(payload: bytes, ci: int) -> None:
    header = encode_tpl(TplHeader(ci=0x78)) if ci == 0x78 else _short_tpl()
    frame = encode_dll(0x44, WATER, header + payload)
    with contextlib.suppress(DecodeError):
        qundis.qundis(HookInput(frame, ci, payload, WATER, None))


@given(st.binary(min_size=53, max_size=53))
def test_random_blocks_raise_nothing(content: bytes) -> None:
    for record in qundis.walk_by_records(content):
        assert record.raw


_VECTOR = _walk_by_frame(
    qundis.encode_walk_by(
        0x0D, Decimal("1.5e9"), (None, Decimal(0)), (None, Decimal(0)), monthly=[7] * 12
    ),
    HEAT,
)


@given(st.integers(0, len(_VECTOR) - 1), st.integers(0, 7))
def test_bit_flips_raise_only_decode_errors(position: int, bit: int) -> None:
    flipped = bytearray(_VECTOR)
    flipped[position] ^= 1 << bit
    with contextlib.suppress(DecodeError):
        DECODER.decode(bytes(flipped))


@given(st.integers(1, len(_VECTOR) - 1))
def test_truncations_raise_only_decode_errors(size: int) -> None:
    cut = bytes((size - 1,)) + _VECTOR[1:size]
    with contextlib.suppress(DecodeError):
        DECODER.decode(cut)


@pytest.mark.parametrize(("at", "value"), [(7, 0x06), (52, 0x9F)])
def test_blocks_that_do_not_look_clear_are_left_alone(at: int, value: int) -> None:
    # Q caloric 5.5 sends the block encrypted: byte 7 and the final filler are not 07 and 2F.
    content = bytearray(
        qundis.encode_walk_by(0x13, Decimal(1), (None, Decimal(0)), (None, Decimal(0)))
    )
    assert qundis.walk_by_records(bytes(content))
    content[at] = value
    assert qundis.walk_by_records(bytes(content)) == ()
