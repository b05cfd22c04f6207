"""Data records (decoders.records) and their encoder (decoders.record_encoder).

Fixed vectors: the waterstarm plaintext of PROTOCOL_NOTES.md section 3, the Kamstrup records of
sections 5.3 and 6.2 and the libmbus plain-text records of 7.6. The property tests generate
record streams from DIFs, DIFEs, VIFs and VIFEs, and mutate them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import date, datetime, time
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from decoders import datatypes as dt
from decoders import records
from decoders.record_encoder import encode_record, encode_records
from decoders.records import RecordBlock, parse_records
from decoders.telegram import RecordValue
from metergate.errors import DecodeError, FrameError

# PROTOCOL_NOTES 3, waterstarm (wmbusmeters drivers/src/waterstarm.xmq), decrypted payload
WATERSTARM = bytes.fromhex(
    "2F2F 046D 282A9E27 0413 6A000000 02FD17 0000 04933C 00000000 2F2F2F2F2F2F".replace(" ", "")
)
# PROTOCOL_NOTES 5.3 / 6.2, Kamstrup MULTICAL 21: the records after CI 78
KAMSTRUP = bytes.fromhex("02FF20 7100 0413 08190000 4413 08190000 615B 7F 6167 13".replace(" ", ""))


@pytest.fixture
def cold_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every parse in the test starts from an empty layout cache."""
    monkeypatch.setattr(records, "_CACHE", {})
    monkeypatch.setattr(records, "_cached_layouts", 0)


def fresh_parse(data: bytes) -> RecordBlock:
    """parse_records with the layout cache bypassed (and left as it was)."""
    saved, count = records._CACHE, records._cached_layouts
    records._CACHE, records._cached_layouts = {}, 0
    try:
        return parse_records(data)
    finally:
        records._CACHE, records._cached_layouts = saved, count


def summary(block: RecordBlock) -> list[tuple[object, ...]]:
    return [
        (r.quantity, r.unit, r.function, r.storage, r.tariff, r.subunit, r.value)
        for r in block.records
    ]


def dif_chain(
    field: int, function: int = 0, storage: int = 0, tariff: int = 0, sub: int = 0
) -> bytes:
    """DIF and DIFEs for a record: PROTOCOL_NOTES 7.2, written out bit by bit."""
    difes: list[int] = []
    storage_rest, tariff_rest, sub_rest = storage >> 1, tariff, sub
    while storage_rest or tariff_rest or sub_rest:
        difes.append((storage_rest & 0x0F) | (tariff_rest & 0x03) << 4 | (sub_rest & 0x01) << 6)
        storage_rest, tariff_rest, sub_rest = storage_rest >> 4, tariff_rest >> 2, sub_rest >> 1
    dif = field | function << 4 | (storage & 1) << 6 | (0x80 if difes else 0)
    marked = [dife | 0x80 for dife in difes[:-1]] + difes[-1:]
    return bytes((dif, *marked))


# --- fixed vectors ------------------------------------------------------------------------------


def test_waterstarm_plaintext(cold_cache: None) -> None:
    # PROTOCOL_NOTES 3: datetime 2020-07-30 10:40, volume 106 l, error flags 0, backward 0
    block = parse_records(WATERSTARM)
    assert summary(block) == [
        ("datetime", "datetime", "instantaneous", 0, 0, 0, datetime(2020, 7, 30, 10, 40)),
        ("volume", "m3", "instantaneous", 0, 0, 0, Decimal("0.106")),
        ("error_flags", "", "instantaneous", 0, 0, 0, Decimal(0)),
        ("volume_backward", "m3", "instantaneous", 0, 0, 0, Decimal("0.000")),
    ]
    assert str(block.records[3].value) == "0.000"
    assert not block.more_records_follow
    assert block.format_bytes == bytes.fromhex("046D 0413 02FD17 04933C".replace(" ", ""))
    assert [r.raw.hex() for r in block.records] == ["282a9e27", "6a000000", "0000", "00000000"]


def test_kamstrup_records(cold_cache: None) -> None:
    # PROTOCOL_NOTES 5.3 and 6.2 (wmbusmeters kamwater: total 6.408 m3, target 6.408 m3,
    # flow temperature 127 C, external temperature 19 C)
    block = parse_records(KAMSTRUP)
    assert summary(block) == [
        ("manufacturer_specific_20", "", "instantaneous", 0, 0, 0, Decimal(113)),
        ("volume", "m3", "instantaneous", 0, 0, 0, Decimal("6.408")),
        ("volume", "m3", "instantaneous", 1, 0, 0, Decimal("6.408")),
        ("flow_temperature", "C", "minimum", 1, 0, 0, Decimal(127)),
        ("external_temperature", "C", "minimum", 1, 0, 0, Decimal(19)),
    ]
    # PROTOCOL_NOTES 6.2: the format bytes of the compact frame
    assert block.format_bytes == bytes.fromhex("02FF2004134413615B6167")


@pytest.mark.parametrize(
    ("payload", "unit", "value"),
    [
        # PROTOCOL_NOTES 7.6, libmbus Itron Cyble: "cust. ID" = "TEST CYBLE"
        ("0D7C084449202E747375630A454C4259432054534554", "cust. ID", "TEST CYBLE"),
        # PROTOCOL_NOTES 7.6, libmbus Itron Cyble: "bat. time" = 4338
        ("027C09656D6974202E746162F210", "bat. time", Decimal(4338)),
        # PROTOCOL_NOTES 7.6, libmbus Elvaco CMa10: 54.10 %RH
        ("02FC03485225742215", "%RH", Decimal("54.10")),
    ],
)
def test_plain_text_units(payload: str, unit: str, value: RecordValue) -> None:
    (record,) = parse_records(bytes.fromhex(payload)).records
    assert (record.quantity, record.unit, record.value) == ("plain_text_unit", unit, value)
    assert str(record.value) == str(value)


@pytest.mark.parametrize(
    ("payload", "value"),
    [
        ("026CFF0C", date(2007, 12, 31)),  # type G, PROTOCOL_NOTES 7.8
        ("046D32371F15", datetime(2008, 5, 31, 23, 50)),  # type F, PROTOCOL_NOTES 7.8
        ("066D000008162700", datetime(2016, 7, 22, 8)),  # type I, PROTOCOL_NOTES 7.8
        ("026C0000", None),  # all-zero date: "no date"
        ("046DB2371F15", None),  # IV set
        ("03FD65050A17", "23:10:05"),  # type J: time point of day change, as ISO text
        ("02FD650500", Decimal(5)),  # FD 65 as a 16-bit number
        ("04FD72A1B2C3D4", "a1b2c3d4"),  # type K, kept as hex
        ("016DAB", "ab"),  # a date VIF on a data field no date type has
    ],
)
def test_dates_and_times(payload: str, value: RecordValue) -> None:
    (record,) = parse_records(bytes.fromhex(payload)).records
    assert record.value == value
    assert type(record.value) is type(value)


@pytest.mark.parametrize(
    ("payload", "quantity", "unit", "value"),
    [
        ("0113FF", "volume", "m3", Decimal("-0.001")),  # type B is signed
        ("0913FF", "volume", "m3", None),  # BCD with invalid nibbles
        ("0C1378563412", "volume", "m3", Decimal("12345.678")),
        ("0C13785634F2", "volume", "m3", Decimal("-2345.678")),  # BCD negative
        ("0E13010000000000", "volume", "m3", Decimal("0.001")),  # 12-digit BCD
        ("0713FFFFFFFFFFFFFF7F", "volume", "m3", Decimal("9223372036854775.807")),
        ("0613000000000080", "volume", "m3", Decimal("-140737488355.328")),
        ("01FD17FF", "error_flags", "", Decimal(255)),  # binary: unsigned, not -1
        ("09FD1799", "error_flags", "", Decimal(99)),
        ("05FD170000C03F", "error_flags", "", "0000c03f"),
        ("04937F01020304", "volume_mfct_", "m3", Decimal("67305.985")),  # coded as VIF 13
        ("0293FF02F104", "volume_mfct_02", "m3", Decimal("1.265")),
        ("01FF20FF", "manufacturer_specific_20", "", Decimal(255)),  # the maker's: unsigned
        ("05FF200000C03F", "manufacturer_specific_20", "", "0000c03f"),
        ("04FB210A000000", "volume", "m3", Decimal("0.028316846592")),  # 10 x 0.1 ft3
        ("04FB2201000000", "volume", "m3", Decimal("0.0003785411784")),  # 0.1 US gallon
        ("0513 0000C03F".replace(" ", ""), "volume", "m3", Decimal("0.0015")),  # real32 1.5
        ("05130000C07F", "volume", "m3", None),  # real32 NaN
        ("0013", "volume", "m3", None),  # no data
        ("0813", "volume", "m3", None),  # selection for readout: no data
        ("02BB4BFF0C", "volume_flow_upper_limit_first_end", "datetime", date(2007, 12, 31)),
        ("02BB511000", "volume_flow_limit_exceeded_duration", "min", Decimal(16)),
    ],
)
def test_values(payload: str, quantity: str, unit: str, value: RecordValue) -> None:
    (record,) = parse_records(bytes.fromhex(payload)).records
    assert (record.quantity, record.unit, record.value) == (quantity, unit, value)


def test_factor_is_exact_for_the_largest_integers() -> None:
    # 0.1 ft3 times a 64-bit count: 30 significant digits, more than the default context holds
    (record,) = parse_records(bytes.fromhex("07FB21FFFFFFFFFFFFFF7F")).records
    assert record.value == Decimal(f"{(2**63 - 1) * 28316846592}E-13")


# --- DIF and DIFE -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dif", "function", "storage"),
    [
        ("04", "instantaneous", 0),
        ("14", "maximum", 0),
        ("24", "minimum", 0),
        ("34", "error", 0),
        ("44", "instantaneous", 1),
        ("74", "error", 1),
    ],
)
def test_dif_function_and_storage_bit(dif: str, function: str, storage: int) -> None:
    (record,) = parse_records(bytes.fromhex(dif + "1301000000")).records
    assert (record.function, record.storage, record.tariff, record.subunit) == (
        function,
        storage,
        0,
        0,
    )


@pytest.mark.parametrize(
    ("difs", "storage", "tariff", "subunit"),
    [
        # PROTOCOL_NOTES 7.2: storage = DIF bit 6 + sum DIFEk(3-0) << (1 + 4(k-1)),
        # tariff = sum DIFEk(5-4) << 2(k-1), subunit = sum DIFEk(6) << (k-1)
        ("8401", 2, 0, 0),
        ("C401", 3, 0, 0),
        ("8410", 0, 1, 0),
        ("8440", 0, 0, 1),
        ("847F", 30, 3, 1),
        ("C4FF5A", 1 + 15 * 2 + 10 * 32, 3 + 1 * 4, 1 + 1 * 2),
        ("848001", 32, 0, 0),
        ("84808010", 0, 1 << 4, 0),
        ("8480808040", 0, 0, 8),
    ],
)
def test_dife_chains(difs: str, storage: int, tariff: int, subunit: int) -> None:
    (record,) = parse_records(bytes.fromhex(difs + "1301000000")).records
    assert (record.storage, record.tariff, record.subunit) == (storage, tariff, subunit)
    assert record.spec.dif == bytes.fromhex(difs)
    assert record.value == Decimal("0.001")


def test_ten_difes_are_the_limit() -> None:
    # PROTOCOL_NOTES 7.2: at most 10 DIFEs; each carries storage nibble 1
    ten = bytes((0x84, *[0x81] * 9, 0x01))
    (record,) = parse_records(ten + bytes.fromhex("1301000000")).records
    assert record.storage == sum(1 << (1 + 4 * k) for k in range(10))
    eleven = bytes((0x84, *[0x81] * 10, 0x01))
    with pytest.raises(FrameError):
        parse_records(eleven + bytes.fromhex("1301000000"))


def test_ten_vifes_are_the_limit() -> None:
    # EN 13757-3 §6.4.1: at most 10 VIFEs; the FB/FD table byte is not one of them
    errors = bytes((0x80,) * 9 + (0x00,))  # ten error-code VIFEs
    assert parse_records(b"\x04\x93" + errors + b"\x01\x00\x00\x00").records[0].value == Decimal(
        "0.001"
    )
    with pytest.raises(FrameError):
        parse_records(b"\x04\x93\x80" + errors + b"\x01\x00\x00\x00")
    (record,) = parse_records(b"\x04\xfd\x97" + errors + b"\x01\x00\x00\x00").records
    assert record.quantity == "error_flags"
    with pytest.raises(FrameError):
        parse_records(b"\x04\xfd\x97\x80" + errors + b"\x01\x00\x00\x00")


@pytest.mark.parametrize("dif", ["3F", "4F", "5F", "6F", "7F", "8F", "FF"])
def test_special_difs_that_have_no_length(dif: str) -> None:
    # PROTOCOL_NOTES 7.1: reserved; with no length to skip by, the rest is kept as it is and
    # the records before it survive
    block = parse_records(bytes.fromhex("041301000000" + dif + "1302"))
    assert [r.value for r in block.records] == [Decimal("0.001"), "1302"]
    assert block.records[1].quantity == f"reserved_dif_{dif.lower()}_data"
    assert not block.more_records_follow


def test_idle_fillers_anywhere() -> None:
    plain = bytes.fromhex("0413 01000000 02FD17 0300".replace(" ", ""))
    expected = summary(parse_records(plain))
    for filled in (
        "2F 0413 01000000 02FD17 0300",
        "0413 01000000 2F2F2F 02FD17 0300",
        "0413 01000000 02FD17 0300 2F",
        "2F2F 0413 01000000 2F 02FD17 0300 2F2F",
    ):
        block = parse_records(bytes.fromhex(filled.replace(" ", "")))
        assert summary(block) == expected
        assert block.format_bytes == bytes.fromhex("041302FD17")
    assert parse_records(b"\x2f" * 7).records == ()
    assert parse_records(b"").records == ()


@pytest.mark.parametrize(("dif", "more"), [("0F", False), ("1F", True)])
def test_manufacturer_data_to_the_end(dif: str, more: bool) -> None:
    # PROTOCOL_NOTES 7.1: 0F manufacturer data up to the end; 1F the same, more records follow
    block = parse_records(bytes.fromhex("0413 01000000".replace(" ", "") + dif + "0413FF2F"))
    assert block.more_records_follow is more
    assert len(block.records) == 2
    last = block.records[1]
    assert (last.quantity, last.value, last.raw) == (
        "manufacturer_data",
        "0413ff2f",
        b"\x04\x13\xff\x2f",
    )
    assert last.spec.dif == bytes.fromhex(dif)
    empty = parse_records(bytes.fromhex(dif))
    assert empty.records[0].value == ""
    assert empty.more_records_follow is more


@pytest.mark.parametrize(
    ("payload", "value"),
    [
        ("0DFD0C05" + b"ABCDE"[::-1].hex(), "ABCDE"),  # text, sent last character first
        ("0DFD0C00", ""),
        ("0D13C23412", Decimal("1.234")),  # BCD, LVAR - C0 bytes (PROTOCOL_NOTES 7.7)
        ("0D13D23412", Decimal("-1.234")),
        ("0D13C2AB12", None),  # invalid BCD
        ("0D13E3010203", "010203"),  # binary
        ("0D13F0" + "00" * 16, "00" * 16),  # F0: 4 * (F0 - EC) = 16 bytes
        ("0D13F4" + "11" * 32, "11" * 32),
        ("0DFD3B03414243", "414243"),  # a wM-Bus container is bytes, not text
        ("0DFF2003414243", "414243"),  # so is the maker's own data
        ("0DFB22C110", Decimal("0.003785411784")),  # 10 x 0.1 US gallon, BCD LVAR
    ],
)
def test_lvar_records(payload: str, value: RecordValue) -> None:
    (record,) = parse_records(bytes.fromhex(payload)).records
    assert record.value == value


@pytest.mark.parametrize(
    "payload",
    [
        "0D13F7",  # reserved LVAR
        "0D13FF",
        "0D1305414243",  # 5 text bytes announced, 3 sent
        "0D13F0" + "00" * 15,
        "0D13",  # the LVAR byte missing
    ],
)
def test_bad_lvar(payload: str) -> None:
    with pytest.raises(FrameError):
        parse_records(bytes.fromhex(payload))


@pytest.mark.parametrize(
    "payload",
    [
        "04",  # DIF without VIF
        "0413010000",  # 3 of 4 data bytes
        "8480",  # inside the DIFE chain
        "0493",  # inside the VIFE chain
        "04FD",
        "047C",  # plain-text VIF without its length
        "047C0541",  # plain-text unit cut short
    ],
)
def test_truncated_records(payload: str) -> None:
    with pytest.raises(FrameError):
        parse_records(bytes.fromhex(payload))


# --- the layout cache ---------------------------------------------------------------------------


def test_cache_serves_each_payload_its_own_values(cold_cache: None) -> None:
    first = parse_records(WATERSTARM)
    other = bytearray(WATERSTARM)
    other[4:8] = bytes.fromhex("32371F15")  # another time
    other[10:14] = (123456).to_bytes(4, "little")  # another volume
    other[17:19] = b"\x05\x00"
    second = parse_records(bytes(other))
    assert len(records._CACHE[len(WATERSTARM)]) == 1  # served by the layout of the first
    assert [r.value for r in second.records] == [
        datetime(2008, 5, 31, 23, 50),
        Decimal("123.456"),
        Decimal(5),
        Decimal("0.000"),
    ]
    assert [r.value for r in parse_records(WATERSTARM).records] == [r.value for r in first.records]
    assert [r.raw for r in second.records][1] == (123456).to_bytes(4, "little")


def test_cache_does_not_serve_another_layout_of_the_same_length(cold_cache: None) -> None:
    parse_records(WATERSTARM)
    variants = [
        # the same bytes with one non-data byte changed each time
        WATERSTARM[:9] + b"\x14" + WATERSTARM[10:],  # VIF 13 -> 14: 10 l units
        WATERSTARM[:8] + b"\x44" + WATERSTARM[9:],  # DIF 04 -> 44: storage 1
        WATERSTARM[:3] + b"\x6c" + WATERSTARM[4:],  # VIF 6D -> 6C: a 2-byte date, layout shifts
        WATERSTARM[:17] + b"\x2f\x2f" + WATERSTARM[19:],  # data that look like fillers: data
        WATERSTARM[:14] + b"\x01\xfd\x17\x00\x2f" + WATERSTARM[19:],  # shorter record + filler
        WATERSTARM[:-1] + b"\x0f",  # trailing filler -> manufacturer data
        b"\x2f" + WATERSTARM[:-1],  # everything shifted by one
    ]
    for variant in variants:
        assert len(variant) == len(WATERSTARM)
        try:
            expected = summary(fresh_parse(variant))
        except DecodeError as exc:
            with pytest.raises(type(exc)):
                parse_records(variant)
            continue
        assert summary(parse_records(variant)) == expected
        assert summary(parse_records(variant)) == expected  # and again, from the cache


def test_cache_distinguishes_plain_text_units(cold_cache: None) -> None:
    hours = bytes.fromhex("027C01680100")  # unit "h"
    minutes = bytes.fromhex("027C016D0100")  # unit "m"
    assert parse_records(hours).records[0].unit == "h"
    assert parse_records(minutes).records[0].unit == "m"


def test_cache_stays_bounded(cold_cache: None) -> None:
    for n in range(records._CACHE_LIMIT + 10):
        parse_records(
            b"\x2f" * (n % 7) + b"\x04\x13" + n.to_bytes(4, "little") + b"\x2f" * (n // 7)
        )
    assert sum(len(v) for v in records._CACHE.values()) <= records._CACHE_LIMIT


# --- generated records --------------------------------------------------------------------------

# VIFs of every family: (VIF and VIFE bytes, what they are)
PRIMARY_NUMBER_VIFS = st.integers(min_value=0x00, max_value=0x6B).map(lambda c: bytes((c,)))
SINGLE_VIFS = st.sampled_from(
    [bytes((c,)) for c in (0x6C, 0x6D, 0x6E, 0x6F, *range(0x70, 0x7C), 0x7D, 0x7E, 0x7F)]
)
COMBINABLE = st.sampled_from(
    [
        0x00,
        0x15,
        0x1F,
        0x20,
        0x22,
        0x27,
        0x28,
        0x2C,
        0x36,
        0x39,
        0x3A,
        0x3B,
        0x3C,
        0x3D,
        0x40,
        0x41,
        0x42,
        0x49,
        0x4F,
        0x50,
        0x53,
        0x62,
        0x6A,
        0x70,
        0x74,
        0x77,
        0x78,
        0x7D,
        0x7E,
        0x7F,
    ]
)


def _chain(first: bytes, vifes: list[int]) -> bytes:
    """Set the extension bit on every byte that has a successor."""
    out = list(first) + vifes
    return bytes([b | 0x80 for b in out[:-1]] + [out[-1] & 0x7F])


@st.composite
def vif_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["primary", "single", "fd", "fb", "text", "manufacturer"]))
    if kind == "primary":
        head = draw(PRIMARY_NUMBER_VIFS)
    elif kind == "single":
        head = draw(SINGLE_VIFS)
    elif kind == "fd":
        head = bytes((0xFD, draw(st.integers(min_value=0, max_value=0x7F))))
    elif kind == "fb":
        head = bytes((0xFB, draw(st.integers(min_value=0, max_value=0x7F))))
    elif kind == "text":
        unit = draw(st.text(alphabet="abcdefghkmsVAW%/ ", min_size=1, max_size=6)).encode()
        vifes = draw(st.lists(COMBINABLE, max_size=2))
        vif = 0xFC if vifes else 0x7C
        return bytes((vif, len(unit))) + unit[::-1] + (_chain(b"", vifes) if vifes else b"")
    else:
        head = bytes((0xFF, draw(st.integers(min_value=0, max_value=0x7F))))
    vifes = draw(st.lists(COMBINABLE, max_size=3))
    if len(head) == 2:  # FD/FB/FF and their first VIFE
        return _chain(head[:1], [head[1], *vifes]) if vifes else bytes((head[0], head[1] & 0x7F))
    return _chain(head, vifes)


FIELDS = st.sampled_from(
    [0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0x9, 0xA, 0xB, 0xC, 0xD, 0xE]
)
LENGTHS = {0x0: 0, 0x1: 1, 0x2: 2, 0x3: 3, 0x4: 4, 0x5: 4, 0x6: 6, 0x7: 8, 0x8: 0, 0x9: 1,
           0xA: 2, 0xB: 3, 0xC: 4, 0xE: 6}  # fmt: skip
BCD_FIELDS = {0x9, 0xA, 0xB, 0xC, 0xE}


@st.composite
def header_and_data(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """One record as sent: DIF/DIFE/VIF/VIFE, then data the DIF's data field can hold."""
    field = draw(FIELDS)
    dif = dif_chain(
        field,
        draw(st.integers(min_value=0, max_value=3)),
        draw(st.integers(min_value=0, max_value=2**41 - 1) | st.integers(min_value=0, max_value=3)),
        draw(st.integers(min_value=0, max_value=2**20 - 1) | st.integers(min_value=0, max_value=3)),
        draw(st.integers(min_value=0, max_value=2**10 - 1) | st.integers(min_value=0, max_value=1)),
    )
    vif = draw(vif_bytes())
    if field == 0xD:
        text = draw(st.binary(max_size=15))
        return dif + vif, bytes((len(text),)) + text
    length = LENGTHS[field]
    if field in BCD_FIELDS:
        digits = draw(st.text(alphabet="0123456789", min_size=2 * length, max_size=2 * length))
        if draw(st.booleans()):
            digits = "f" + digits[1:]
        return dif + vif, bytes.fromhex(digits)[::-1]
    if field == 0x5:
        number = draw(st.floats(width=32, allow_nan=False, allow_infinity=False))
        return dif + vif, struct.pack("<f", number)
    if (vif[0] & 0x7F) in (0x6C, 0x6D) and length in (2, 4, 6) and draw(st.booleans()):
        moment = draw(
            st.datetimes(min_value=datetime(1981, 1, 1), max_value=datetime(2080, 12, 31))
        )
        if length == 2:
            return dif + vif, dt.encode_date_g(moment.date())
        if length == 4:
            return dif + vif, dt.encode_datetime_f(moment.replace(second=0, microsecond=0))
        return dif + vif, dt.encode_datetime_i(moment.replace(microsecond=0))
    return dif + vif, draw(st.binary(min_size=length, max_size=length))


@st.composite
def payloads(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    """A record stream; sometimes with DIF 0F/1F and the maker's bytes at the end."""
    items = draw(st.lists(header_and_data(), min_size=1, max_size=8))
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        items.append((draw(st.sampled_from([b"\x0f", b"\x1f"])), draw(st.binary(max_size=6))))
    return items


def _join(items: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(header + data for header, data in items)


SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(payloads())
def test_generated_streams_parse_to_one_record_each(items: list[tuple[bytes, bytes]]) -> None:
    block = fresh_parse(_join(items))
    assert len(block.records) == len(items)
    for record, (header, data) in zip(block.records, items, strict=True):
        assert record.spec.dif + record.spec.vif == header
        assert record.raw == (data[1:] if record.spec.data_field == 0xD else data)
    assert block.more_records_follow == (items[-1][0] == b"\x1f")


@SETTINGS
@given(payloads())
def test_encode_records_round_trip(items: list[tuple[bytes, bytes]]) -> None:
    block = fresh_parse(_join(items))
    # a record whose data say "no value" (invalid BCD, NaN, a date flagged invalid) has no
    # value to code, except where the data field holds no data at all
    kept = [
        (header, record.value)
        for (header, _), record in zip(items, block.records, strict=True)
        if record.value is not None or LENGTHS.get(record.spec.data_field) == 0
    ]
    again = fresh_parse(encode_records(kept))
    assert [(r.spec, r.value) for r in again.records] == [
        (r.spec, r.value)
        for r in block.records
        if r.value is not None or LENGTHS.get(r.spec.data_field) == 0
    ]


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(
        [
            # header, exponent, factor, data length (PROTOCOL_NOTES 7.3-7.5)
            ("0413", -3, None, 4),
            ("0C13", -3, None, 4),
            ("0E13", -3, None, 6),
            ("0713", -3, None, 8),
            ("0206", 3, None, 2),
            ("06FB09", 9, None, 6),
            ("04FB21", -1, Decimal("0.028316846592"), 4),
            ("0CFB22", -1, Decimal("0.003785411784"), 4),
            ("049374", -5, None, 4),  # VIFE 74: x 10^-2
            ("04937D", 0, None, 4),  # VIFE 7D: x 10^3
            ("0D13", -3, None, -1),  # LVAR BCD
        ]
    ),
    st.data(),
)
def test_numbers_encode_and_decode_exactly(
    spec: tuple[str, int, Decimal | None, int], data: st.DataObject
) -> None:
    header, exponent, factor, length = spec
    if length == -1:
        count = data.draw(st.integers(min_value=-(10**18) + 1, max_value=10**18 - 1))
    elif bytes.fromhex(header)[0] & 0x0F in BCD_FIELDS:
        count = data.draw(
            st.integers(min_value=-(10 ** (2 * length - 1)) + 1, max_value=10 ** (2 * length) - 1)
        )
    else:
        bits = 8 * length
        count = data.draw(st.integers(min_value=-(2 ** (bits - 1)), max_value=2 ** (bits - 1) - 1))
    value = Decimal(count).scaleb(exponent)
    if factor is not None:
        value = value * factor
        assume(value == Decimal(count).scaleb(exponent) * factor)  # the default context is exact
    (record,) = fresh_parse(encode_record(bytes.fromhex(header), value)).records
    assert record.value == value


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("0113", Decimal("0.128")),  # 128 does not fit a signed byte
        ("0113", Decimal("0.0005")),  # not a whole number of litres
        ("0913", Decimal("-0.10")),  # 2 BCD digits hold -9..99
        ("0413", Decimal("Infinity")),
        ("0413", Decimal("NaN")),
        ("0413", date(2020, 1, 1)),
        ("0513", Decimal("0.1234567891")),  # no single-precision number is that
        ("0513", Decimal("1e40")),
        ("01FD17", Decimal(-1)),  # bit fields are unsigned
        ("026C", datetime(2020, 1, 1, 12)),  # a date field cannot hold a time
        ("046D", date(2020, 1, 1)),
        ("046D", datetime(2020, 1, 1, 12, 0, 30)),  # type F has no seconds
        ("026C", date(2081, 1, 1)),  # type G has no century
        ("03FD65", "25:00"),
        ("02FD17", "zz"),  # not hex
        ("02FD17", "0102030405"),  # hex of the wrong length
        ("0DFD0C", "x" * 192),  # longer than LVAR text can say
        ("0DFD3B", "00" * 17),  # no LVAR codes 17 binary bytes
        ("0D13", Decimal(10**18)),  # 19 BCD digits
        ("", Decimal(0)),
        ("0413FF", Decimal(0)),  # not one whole header
        ("04130000", Decimal(0)),
    ],
)
def test_encoder_refuses_what_the_record_cannot_carry(header: str, value: RecordValue) -> None:
    with pytest.raises(DecodeError):
        encode_record(bytes.fromhex(header), value)


def test_encoder_codes_each_kind() -> None:
    stream = encode_records(
        [
            (bytes.fromhex("046D"), datetime(2020, 7, 30, 10, 40)),
            (bytes.fromhex("0413"), Decimal("0.106")),
            (bytes.fromhex("02FD17"), Decimal(0)),
            (bytes.fromhex("04933C"), Decimal(0)),
        ]
    )
    # PROTOCOL_NOTES 3: the waterstarm records, without the fillers
    assert stream == bytes.fromhex(
        "046D282A9E27 04136A000000 02FD170000 04933C00000000".replace(" ", "")
    )
    assert encode_record(bytes.fromhex("03FD65"), "23:10:05") == bytes.fromhex("03FD65050A17")
    assert encode_record(bytes.fromhex("0DFD0C"), "ABC") == bytes.fromhex("0DFD0C03434241")
    assert encode_record(bytes.fromhex("0DFD3B"), "00" * 20) == bytes.fromhex(
        "0DFD3BF1" + "00" * 20
    )
    assert encode_record(b"\x1f", "0102") == b"\x1f\x01\x02"
    assert encode_record(bytes.fromhex("0113"), Decimal("-0.128")) == bytes.fromhex("011380")
    assert encode_record(bytes.fromhex("01FD17"), Decimal(255)) == bytes.fromhex("01FD17FF")


# --- bad input: only DecodeError ----------------------------------------------------------------


def _assert_only_decode_errors(data: bytes) -> None:
    """Parse or raise a DecodeError; any other exception fails the test."""
    try:
        block = parse_records(data)
    except DecodeError:
        return
    # what parses accounts for its bytes: no record's data reach past the payload
    assert sum(len(r.raw) for r in block.records) <= len(data)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_decode_errors(data: bytes) -> None:
    _assert_only_decode_errors(data)


@settings(max_examples=500, deadline=None)
@given(payloads(), st.data())
def test_truncations_raise_only_decode_errors(
    items: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    payload = _join(items)
    cut = data.draw(st.integers(min_value=0, max_value=len(payload)))
    _assert_only_decode_errors(payload[:cut])


def _flips(payload: bytes, positions: list[int]) -> Iterator[bytes]:
    for position in positions:
        flipped = bytearray(payload)
        flipped[position // 8 % len(payload)] ^= 1 << (position % 8)
        yield bytes(flipped)


@settings(max_examples=1000, deadline=None)
@given(payloads(), st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=3))
def test_bit_flips_raise_only_decode_errors_and_the_cache_agrees(
    items: list[tuple[bytes, bytes]], positions: list[int]
) -> None:
    payload = _join(items)
    parse_records(payload)  # warm: the layout of the original is cached
    for mutated in _flips(payload, positions):
        try:
            expected = fresh_parse(mutated)
        except DecodeError as exc:
            with pytest.raises(type(exc)):
                parse_records(mutated)
            continue
        got = parse_records(mutated)
        assert [(r.spec, r.value, r.raw) for r in got.records] == [
            (r.spec, r.value, r.raw) for r in expected.records
        ]
        assert (got.more_records_follow, got.format_bytes) == (
            expected.more_records_follow,
            expected.format_bytes,
        )


def test_fresh_parse_helper_leaves_the_cache_alone(cold_cache: None) -> None:
    parse_records(KAMSTRUP)
    fresh_parse(WATERSTARM)
    assert set(records._CACHE) == {len(KAMSTRUP)}


def test_time_value_type() -> None:
    # type J comes out as ISO text; the JSON shows it as it is
    (record,) = parse_records(bytes.fromhex("03FD65000008")).records
    assert record.value == time(8, 0).isoformat()


def test_a_record_cut_short_after_complete_ones_is_kept_as_an_unparsed_tail() -> None:
    # A CRC left in after the fillers, as in real frames (corpus drivers amiplus, qcaloric).
    payload = bytes.fromhex("0413E80300002F2FDE47")
    block = parse_records(payload)
    assert [(r.quantity, r.value) for r in block.records] == [
        ("volume", Decimal("1.000")),
        ("unparsed_tail", "de47"),
    ]
    # The same length and header bytes, but a complete record at the end, is not served the
    # tail from the cache.
    complete = bytes.fromhex("0413E80300002F2F0013")  # DIF 00: a record without data
    assert parse_records(complete).records[-1].quantity != "unparsed_tail"
    with pytest.raises(FrameError):  # nothing complete before it: an error, not a guess
        parse_records(bytes.fromhex("0413E803"))
