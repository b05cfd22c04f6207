"""Telegrams as JSON (decoders.render) against DESIGN.md section 2, "Decoded telegram as JSON"."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders.records import parse_records
from decoders.render import error_json, record_json, telegram_json, value_text
from decoders.telegram import Address, DataRecord, SecurityInfo, Status, Telegram, TplHeader
from metergate.errors import DecryptionError

# DESIGN.md section 2: the example object, as printed there
DESIGN_EXAMPLE = """
{"meter_id": "KAM-12345678", "manufacturer": "KAM", "id": "12345678", "version": 27,
 "device_type": 22, "medium": "cold water", "protocol": "wmbus", "ci": "7a",
 "access_no": 35, "security": {"mode": 5, "encrypted": true, "decrypted": true},
 "status": {"raw": 0, "flags": []},
 "records": [{"dif": "04", "vif": "13", "function": "instantaneous", "storage": 0,
              "tariff": 0, "subunit": 0, "quantity": "volume", "unit": "m3",
              "value": "12.345"}]}
"""
DESIGN_ERROR = (
    '{"error": {"type": "DecryptionError", "message": "payload does not start with 2F2F after'
    ' decryption", "offset": 15}}'
)

KAMSTRUP = Address("KAM", "12345678", 27, 22, 0x2C2D)


def telegram(payload: bytes, **changes: object) -> Telegram:
    base = Telegram(
        protocol="wmbus",
        c_field=0x44,
        link_address=KAMSTRUP,
        primary_address=None,
        tpl=TplHeader(ci=0x7A, access_no=35, status=0, config=0x0500),
        security=SecurityInfo(mode=5, encrypted=True, decrypted=True),
        status=Status(0, ()),
        records=parse_records(payload).records,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def round_trip(obj: object) -> object:
    """What a reader of the printed line gets: the object must be plain JSON."""
    return json.loads(json.dumps(obj))


def test_design_example_exactly() -> None:
    out = telegram_json(telegram(bytes.fromhex("041339300000")))  # 12345 l
    assert round_trip(out) == json.loads(DESIGN_EXAMPLE)
    assert list(out) == list(json.loads(DESIGN_EXAMPLE))  # and in the same order


def test_error_example_exactly() -> None:
    error = DecryptionError("payload does not start with 2F2F after decryption", offset=15)
    assert round_trip(error_json(error)) == json.loads(DESIGN_ERROR)


def test_optional_keys_appear_only_when_they_say_something() -> None:
    wired = telegram(
        bytes.fromhex("1F"),
        protocol="mbus",
        link_address=None,
        primary_address=5,
        tpl=TplHeader(ci=0x72, access_no=1, status=0, address=KAMSTRUP),
        security=SecurityInfo(mode=0, encrypted=False, decrypted=False),
        more_records_follow=True,
        profile="kamstrup_multical21",
    )
    out = telegram_json(wired)
    extra = set(out) - set(json.loads(DESIGN_EXAMPLE))
    assert extra == {"primary_address", "more_records_follow", "profile"}
    assert (out["primary_address"], out["more_records_follow"]) == (5, True)
    assert out["meter_id"] == "KAM-12345678"  # from the long TPL header


def test_telegram_without_an_address() -> None:
    out = telegram_json(telegram(b"", link_address=None))
    assert out["meter_id"] is None
    assert out["medium"] is None
    assert out["records"] == []


def test_record_keys() -> None:
    block = parse_records(bytes.fromhex("046D282A9E27 0413 6A000000 02FD17 0000".replace(" ", "")))
    for record in block.records:
        assert list(record_json(record)) == [
            "dif",
            "vif",
            "function",
            "storage",
            "tariff",
            "subunit",
            "quantity",
            "unit",
            "value",
        ]
    named = replace(block.records[1], spec=replace(block.records[1].spec, name="total"))
    assert record_json(named)["name"] == "total"
    (with_error,) = parse_records(bytes.fromhex("04930501000000")).records  # VIFE 05: error 5
    assert record_json(with_error)["error_code"] == 5


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        ("0413 6A000000", "0.106"),  # PROTOCOL_NOTES 3, waterstarm
        ("0413 00000000", "0.000"),  # zero keeps the VIF's scale
        ("0217 0500", "50"),  # VIF 17: x 10, not 5E+1
        ("02FB11 0500", "5000"),  # FB 11: x 10^3 m3, not 5E+3
        ("02937D 0100", "1"),  # 10^-3 x 10^3
        ("0210 0100", "0.000001"),  # not 1E-6
        ("0413 FFFFFFFF", "-0.001"),
        ("0713 FFFFFFFFFFFFFF7F", "9223372036854775.807"),
        ("0517 0000C07F", None),  # NaN: no value
        ("026C FF0C", "2007-12-31"),  # PROTOCOL_NOTES 7.8
        ("046D 282A9E27", "2020-07-30T10:40:00"),  # PROTOCOL_NOTES 7.8
        ("066D 000008162700", "2016-07-22T08:00:00"),  # PROTOCOL_NOTES 7.8
        ("03FD65 050A17", "23:10:05"),
        ("0DFD0C 03 434241", "ABC"),
        ("04937F 01020304", "67305.985"),
        ("01FF20 FF", "255"),
        ("0F 0102", "0102"),
    ],
)
def test_values_are_plain_text(payload: str, text: str | None) -> None:
    (record,) = parse_records(bytes.fromhex(payload.replace(" ", ""))).records
    assert round_trip(record_json(record))["value"] == text  # type: ignore[index]


@settings(max_examples=500)
@given(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-30, max_value=30),
)
def test_decimals_never_use_exponent_notation(count: int, exponent: int) -> None:
    value = Decimal(count).scaleb(exponent)
    text = value_text(value)
    assert text is not None
    assert "e" not in text.lower()
    assert Decimal(text) == value
    # the VIF's scale shows: as many decimals as the exponent says
    if exponent < 0:
        assert len(text.split(".")[1]) == -exponent


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("5E+2"), "500"),
        (Decimal("0.000"), "0.000"),
        (Decimal("-1.50"), "-1.50"),
        (date(2026, 1, 31), "2026-01-31"),
        (datetime(2026, 1, 31, 23, 59, 1), "2026-01-31T23:59:01"),
        ("0a0b", "0a0b"),
        (None, None),
    ],
)
def test_value_text(value: Decimal | date | str | None, text: str | None) -> None:
    assert value_text(value) == text


def test_json_output_does_not_share_state_between_records() -> None:
    records = parse_records(bytes.fromhex("0413 01000000 0413 02000000".replace(" ", ""))).records
    first = record_json(records[0])
    first["value"] = "tampered"
    assert record_json(records[1])["value"] == "0.002"
    assert record_json(records[0])["value"] == "0.001"


def test_telegram_json_is_serialisable_for_every_value_kind() -> None:
    payload = bytes.fromhex(
        "046D282A9E27 0413 6A000000 02FD17 0000 03FD65 050A17 0DFD0C 03 434241 0F 01".replace(
            " ", ""
        )
    )
    text = json.dumps(telegram_json(telegram(payload)))
    assert "Decimal" not in text
    assert json.loads(text)["records"][0]["value"] == "2020-07-30T10:40:00"


def test_a_record_of_the_same_spec_renders_its_own_value() -> None:
    (a,) = parse_records(bytes.fromhex("041301000000")).records
    b = DataRecord(a.spec, Decimal("7.000"), b"\x58\x1b\x00\x00")
    assert record_json(a)["value"] == "0.001"
    assert record_json(b)["value"] == "7.000"
