"""The Zenner 0B, B METERS HYDRODIGIT and Techem MK Radio hooks, and the record helpers."""

from __future__ import annotations

import contextlib
from datetime import date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders.hooks import HOOKS, HookInput, HookResult, bmeters, synth, techem, zenner
from decoders.record_encoder import encode_records
from decoders.records import read_header
from decoders.telegram import Address, RecordValue
from decoders.wmbus_link import make_address
from metergate.errors import DecodeError

ZRI = make_address("ZRI", "50000001", 0x0B, 0x16)
BMT = make_address("BMT", "87000001", 0x13, 0x07)
MK4 = make_address("TCH", "02410120", 0x95, 0x62)
MK3A = make_address("TCH", "62560642", 0x50, 0x72)


def _values(result: HookResult) -> dict[str, object]:
    return {(r.spec.dif + r.spec.vif).hex(): r.value for r in result.records}


def test_registered() -> None:
    assert HOOKS["zenner0b"] is zenner.zenner0b
    assert HOOKS["hydrodigit"] is bmeters.hydrodigit
    assert HOOKS["techem_mkradio"] is techem.techem_mkradio


# Zenner 0B -------------------------------------------------------------------------------------


def test_zenner0b_volumes_in_256000ths() -> None:
    payload = b"\x2f\x2f\x0f" + zenner.encode_zenner0b(0x1BBF80, 1818496, 4367872) + b"\x00"
    values = _values(zenner.zenner0b(HookInput(b"", 0x7A, payload, ZRI, None)))
    assert values["04ff0d"] == Decimal("17.062")
    assert values["44ff0c"] == Decimal("7.1035")
    assert values["04ff0b"] == Decimal(0x1BBF80)
    assert values["0f"] == (payload[3:]).hex()  # the raw manufacturer record stays


def test_zenner0b_short_manufacturer_data_adds_nothing() -> None:
    payload = encode_records([(bytes.fromhex("0413"), Decimal("1.000"))]) + b"\x0f\x01\x02"
    assert set(_values(zenner.zenner0b(HookInput(b"", 0x7A, payload, ZRI, None)))) == {"0413", "0f"}


@given(st.integers(0, 0xFFFFFFFF))
def test_zenner0b_scaling_is_exact(count: int) -> None:
    payload = b"\x0f" + zenner.encode_zenner0b(0, 0, count)
    value = _values(zenner.zenner0b(HookInput(b"", 0x7A, payload, ZRI, None)))["04ff0d"]
    assert isinstance(value, Decimal)
    assert value * 256000 == count


# HYDRODIGIT ------------------------------------------------------------------------------------


def _hydrodigit_payload(
    tail: bytes, clock: datetime | None = datetime(2024, 5, 22, 15, 33)
) -> bytes:
    records: list[tuple[bytes, RecordValue]] = [(bytes.fromhex("0c13"), Decimal("43.964"))]
    if clock is not None:
        records.append((bytes.fromhex("046d"), clock))
    return encode_records(records) + b"\x0f" + tail


def test_hydrodigit_blocks_in_order() -> None:
    tail = bmeters.encode_hydrodigit(
        battery=0x0A,
        fraud=(0x80, bytes.fromhex("240425")),
        leak_date=bytes.fromhex("231231"),
        backflow_litres=15,
        monthly=[3908, 4032, 4177, 4309, 2994, 3096, 3196, 3302, 3414, 3537, 3648, 0xFFFFFF],
    )
    result = bmeters.hydrodigit(HookInput(b"", 0x7A, _hydrodigit_payload(tail), BMT, None))
    values = _values(result)
    assert values["01ff01"] == Decimal("3.05")
    assert values["01ff02"] == Decimal(0x80)
    assert values["03ff03"] == date(2024, 4, 25)
    assert values["03ff04"] == date(2023, 12, 31)
    assert values["04933c"] == Decimal("0.015")
    by_storage = {
        (r.quantity, r.storage): r.value
        for r in result.records
        if r.storage and r.quantity in ("volume", "date")
    }
    # Clock in May 2024: April is 1 month back, January 4, December 5, May's own slot 12.
    assert by_storage["volume", 1] == Decimal("43.09")
    assert by_storage["date", 1] == date(2024, 4, 30)
    assert by_storage["volume", 4] == Decimal("39.08")
    assert by_storage["date", 4] == date(2024, 1, 31)
    assert by_storage["volume", 5] is None  # December: FFFFFF, module not fitted yet
    assert by_storage["date", 5] == date(2023, 12, 31)
    assert by_storage["volume", 12] == Decimal("29.94")
    assert by_storage["date", 12] == date(2023, 5, 31)
    assert by_storage["date", 3] == date(2024, 2, 29)  # leap year


def test_hydrodigit_without_a_clock_leaves_the_months_out() -> None:
    tail = bmeters.encode_hydrodigit(monthly=[100] * 12)
    result = bmeters.hydrodigit(HookInput(b"", 0x7A, _hydrodigit_payload(tail, None), BMT, None))
    assert all(r.storage == 0 for r in result.records)


def test_hydrodigit_invalid_dates_are_none() -> None:
    tail = bmeters.encode_hydrodigit(fraud=(0, bytes(3)), leak_date=bytes.fromhex("2413AA"))
    values = _values(bmeters.hydrodigit(HookInput(b"", 0x7A, _hydrodigit_payload(tail), BMT, None)))
    assert values["03ff03"] is None
    assert values["03ff04"] is None


def test_hydrodigit_truncated_block() -> None:
    tail = bmeters.encode_hydrodigit(backflow_litres=1)[:-1]
    with pytest.raises(DecodeError, match="backflow"):
        bmeters.hydrodigit(HookInput(b"", 0x7A, _hydrodigit_payload(tail), BMT, None))


@given(st.binary(max_size=60))
def test_hydrodigit_random_tails_raise_only_decode_errors(tail: bytes) -> None:
    with contextlib.suppress(DecodeError):
        bmeters.hydrodigit(HookInput(b"", 0x7A, _hydrodigit_payload(tail), BMT, None))


# Techem ----------------------------------------------------------------------------------------


def test_mkradio4_total_is_previous_plus_current() -> None:
    payload = techem.encode_mkradio4(12, 34)
    values = _values(techem.techem_mkradio(HookInput(b"", 0xA2, payload, MK4, None)))
    assert values == {"0415": Decimal("4.6"), "4215": Decimal("1.2")}


def test_mkradio3a_total_and_date() -> None:
    payload = techem.encode_mkradio3a(date(2024, 11, 28), 9488)
    values = _values(techem.techem_mkradio(HookInput(b"", 0xA2, payload, MK3A, None)))
    assert values == {"0315": Decimal("948.8"), "02ff01": date(2024, 11, 28)}


def test_techem_other_versions_and_cis() -> None:
    other = make_address("TCH", "02410120", 0x43, 0x62)
    with pytest.raises(DecodeError, match="version 43"):
        techem.techem_mkradio(HookInput(b"", 0xA2, bytes(20), other, None))
    plain = encode_records([(bytes.fromhex("0413"), Decimal("2.000"))])
    assert _values(techem.techem_mkradio(HookInput(b"", 0x7A, plain, MK4, None))) == {
        "0413": Decimal("2.000")
    }


@given(st.binary(max_size=40), st.sampled_from([MK4, MK3A]))
def test_techem_random_payloads_raise_only_decode_errors(payload: bytes, address: Address) -> None:
    with contextlib.suppress(DecodeError):
        techem.techem_mkradio(HookInput(b"", 0xA2, payload, address, None))


# Record helpers --------------------------------------------------------------------------------


@given(st.integers(0, 0xFF), st.integers(0, 1 << 40))
def test_storage_dif_reads_back(field: int, storage: int) -> None:
    field = field & 0x0F
    if field == 0x0F:
        field = 0x04
    header = synth.storage_dif(field, storage) + b"\x13"
    parsed = read_header(header, 0)
    assert parsed is not None
    assert parsed.spec.storage == storage
    assert parsed.spec.data_field == field


def test_helpers_refuse_bad_headers() -> None:
    with pytest.raises(DecodeError):
        synth.standard(b"\x04\x13", b"\x00")  # four data bytes needed
    with pytest.raises(DecodeError):
        synth.counted(b"\x04\x13\x00", 1, b"")  # not exactly one header
    with pytest.raises(DecodeError):
        synth.storage_dif(0x04, -1)
