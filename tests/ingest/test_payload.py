"""`reading/1` and `raw/1` validation (DESIGN.md section 3): exact, strict, never a crash."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.payload import InvalidMessage, RawMessage, ReadingMessage, parse_message
from tests.ingest.messages import raw, reading

TOPIC, GOOD = reading(7)
RAW_TOPIC, RAW = raw(8, meter_id="KAM-99873476")


def parse(topic: str, payload: dict[str, Any] | bytes) -> object:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_message(topic, body)


def changed(change: Callable[[dict[str, Any]], None], base: dict[str, Any] = GOOD) -> dict:
    payload = copy.deepcopy(base)
    change(payload)
    return payload


def test_a_good_reading_message_keeps_exact_values_and_aware_times() -> None:
    message = parse(TOPIC, GOOD)
    assert isinstance(message, ReadingMessage)
    assert message.meter_id == "KAM-00000007"
    assert [r.value for r in message.readings] == [Decimal("7.00070"), Decimal("7.10070")]
    assert str(message.readings[0].value) == "7.00070"
    assert all(r.measured_at.utcoffset() is not None for r in message.readings)
    assert message.status is not None and message.status.flags == ("leak",)


def test_the_example_of_design_section_3_is_accepted() -> None:
    example = {
        "schema": "reading/1", "gateway_id": "gw-01", "seq": 18231, "msg_id": "gw-01:18231",
        "meter_id": "KAM-12345678", "manufacturer": "KAM", "medium": "water",
        "protocol": "wmbus", "frame": "2E44", "rssi_dbm": -71, "location": None,
        "received_at": "2026-10-31T22:00:03Z", "status": {"flags": ["leak"], "raw": 4},
        "readings": [{"quantity": "volume", "unit": "m3", "value": "123.456", "storage": 0,
                      "tariff": 0, "subunit": 0, "function": "instantaneous",
                      "measured_at": "2026-10-31T22:00:00Z"}],
    }  # fmt: skip
    message = parse("metergate/gw-01/KAM-12345678/reading", example)
    assert isinstance(message, ReadingMessage)
    assert message.readings[0].value == Decimal("123.456")
    assert message.frame == bytes.fromhex("2E44")


def test_meter_ids_are_compared_and_stored_in_their_canonical_spelling() -> None:
    payload = changed(lambda p: p.update(meter_id="kam-0000000a"))
    message = parse("metergate/gw-01/KAM-0000000A/reading", payload)
    assert isinstance(message, ReadingMessage)
    assert message.meter_id == "KAM-0000000a"


def test_unknown_keys_are_ignored_so_a_schema_can_grow() -> None:
    payload = changed(lambda p: p.update(profile="kamstrup_flowiq", extra={"a": 1.5}))
    assert isinstance(parse(TOPIC, payload), ReadingMessage)


def test_a_good_raw_message() -> None:
    message = parse(RAW_TOPIC, RAW)
    assert isinstance(message, RawMessage)
    assert message.frame == bytes.fromhex("2E442D2C998734761B16")
    assert message.error.type == "MissingKeyError"
    assert message.error.offset == 15
    unknown_topic, unknown = raw(9, meter_id=None)
    assert parse(unknown_topic, unknown).meter_id is None  # type: ignore[attr-defined]


def _set_reading(**fields: object) -> Callable[[dict[str, Any]], None]:
    return lambda p: p["readings"][0].update(fields)


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda p: p.pop(key)


BAD_READINGS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("float value", _set_reading(value=123.456), "readings.0.value: a value is an exact decimal"),
    ("integer value", _set_reading(value=123), "not a number"),
    ("boolean value", _set_reading(value=True), "not a number"),
    ("NaN", _set_reading(value="NaN"), "readings.0.value: a value is a decimal string"),
    ("infinity", _set_reading(value="Infinity"), "a value is a decimal string"),
    ("exponent", _set_reading(value="1e5"), "a value is a decimal string"),
    ("blank around", _set_reading(value=" 1.5"), "a value is a decimal string"),
    ("comma", _set_reading(value="1,5"), "a value is a decimal string"),
    ("plus sign", _set_reading(value="+1.5"), "a value is a decimal string"),
    ("bare point", _set_reading(value="1."), "a value is a decimal string"),
    ("too long", _set_reading(value="1" * 65), "at most 64 characters"),
    ("null value", _set_reading(value=None), "not a number"),
    ("naive measured_at", _set_reading(measured_at="2026-10-31T22:00:00"), "timezone"),
    ("date only", _set_reading(measured_at="2026-10-31"), "readings.0.measured_at"),
    ("epoch time", _set_reading(measured_at=1793570400), "readings.0.measured_at"),
    ("naive received_at", lambda p: p.update(received_at="2026-10-31T22:00:03"), "timezone"),
    ("negative storage", _set_reading(storage=-1), "readings.0.storage"),
    ("storage as text", _set_reading(storage="0"), "readings.0.storage"),
    ("storage as float", _set_reading(storage=0.0), "readings.0.storage"),
    ("huge tariff", _set_reading(tariff=2**31), "readings.0.tariff"),
    ("unknown function", _set_reading(function="average"), "readings.0.function"),
    ("NUL in quantity", _set_reading(quantity="vol\u0000ume"), "readings.0.quantity"),
    ("empty quantity", _set_reading(quantity=""), "readings.0.quantity"),
    ("missing value", lambda p: p["readings"][0].pop("value"), "readings.0.value: Field required"),
    ("missing readings", _drop("readings"), "readings: Field required"),
    ("missing meter", _drop("meter_id"), "meter_id: Field required"),
    ("missing msg_id", _drop("msg_id"), "msg_id: Field required"),
    ("missing schema", _drop("schema"), "schema: Field required"),
    ("wrong schema", lambda p: p.update(schema="reading/2"), "schema: Input should be"),
    ("raw schema on reading topic", lambda p: p.update(schema="raw/1"), "schema"),
    ("readings not a list", lambda p: p.update(readings={"a": 1}), "readings"),
    ("too many readings", lambda p: p.update(readings=p["readings"] * 501), "readings"),
    ("negative seq", lambda p: p.update(seq=-1), "seq"),
    ("seq as float", lambda p: p.update(seq=1.0), "seq"),
    ("unknown protocol", lambda p: p.update(protocol="lora"), "protocol"),
    ("odd hex frame", lambda p: p.update(frame="2E4"), "frame: a frame is"),
    ("non-hex frame", lambda p: p.update(frame="zz"), "frame: a frame is"),
    ("upper-case flag", lambda p: p.update(status={"flags": ["LEAK"]}), "status.flags.0"),
    ("rssi out of range", lambda p: p.update(rssi_dbm=1000), "rssi_dbm"),
    ("location not an object", lambda p: p.update(location=[1, 2]), "location"),
    ("gateway with a slash", lambda p: p.update(gateway_id="gw/01"), "gateway_id"),
    ("gateway with a wildcard", lambda p: p.update(gateway_id="gw+01"), "gateway_id"),
    ("gateway with a newline", lambda p: p.update(gateway_id="gw\n01"), "gateway_id"),
    ("gateway too long", lambda p: p.update(gateway_id="g" * 65), "gateway_id"),
]


@pytest.mark.parametrize(
    ("change", "message"),
    [pytest.param(change, message, id=name) for name, change, message in BAD_READINGS],
)
def test_bad_reading_payloads_are_refused_with_the_field_named(
    change: Callable[[dict[str, Any]], None], message: str
) -> None:
    with pytest.raises(InvalidMessage) as refused:
        parse(TOPIC, changed(change))
    assert message in refused.value.message


@pytest.mark.parametrize(
    ("topic", "payload", "message"),
    [
        (TOPIC, b"\xff\xfe\x00garbage", "Invalid JSON"),
        (TOPIC, b"", "Invalid JSON"),
        (TOPIC, b"[1, 2]", "Input should be an object"),
        (TOPIC, b'{"schema": "reading/1"', "Invalid JSON"),
        (TOPIC, b"null", "Input should be an object"),
        ("metergate/gw-02/KAM-00000007/reading", json.dumps(GOOD).encode(), "topic's gateway"),
        ("metergate/gw-01/KAM-00000008/reading", json.dumps(GOOD).encode(), "topic's gateway"),
        ("other/gw-01/KAM-00000007/reading", json.dumps(GOOD).encode(), "topic is not"),
        ("metergate/gw-01/KAM-00000007/status", json.dumps(GOOD).encode(), "topic is not"),
        ("metergate/gw-01/KAM-00000007/x/reading", json.dumps(GOOD).encode(), "topic is not"),
        (RAW_TOPIC, json.dumps(GOOD).encode(), "schema"),
        ("metergate/gw-01/unknown/raw", json.dumps(RAW).encode(), "topic's gateway"),
    ],
    ids=[
        "garbage bytes", "empty", "array", "truncated", "null", "other gateway", "other meter",
        "other root", "status topic", "extra level", "reading on raw topic", "raw meter mismatch",
    ],
)  # fmt: skip
def test_bad_messages_are_refused(topic: str, payload: bytes, message: str) -> None:
    with pytest.raises(InvalidMessage, match=message):
        parse_message(topic, payload)


@pytest.mark.parametrize(
    "change",
    [
        _drop("error"),
        _drop("frame"),
        lambda p: p.update(error={"type": "DecryptionError", "message": "x", "offset": -1}),
        lambda p: p.update(error={"type": "", "message": "x"}),
        lambda p: p.update(frame="2E442D2C99873476" * 1025),
        lambda p: p.update(meter_id=7),
    ],
    ids=["no error", "no frame", "negative offset", "empty type", "frame too long", "meter int"],
)
def test_bad_raw_payloads_are_refused(change: Callable[[dict[str, Any]], None]) -> None:
    with pytest.raises(InvalidMessage):
        parse(RAW_TOPIC, changed(change, RAW))


def test_the_reason_does_not_echo_the_payload() -> None:
    secret = "SECRET-LOOKING-TEXT"
    payloads = [
        changed(_set_reading(value=f"{secret}")),
        changed(_set_reading(quantity=f"{secret}\u0000")),
        changed(lambda p: p.update(gateway_id=f"{secret}/x")),
    ]
    for payload in payloads:
        with pytest.raises(InvalidMessage) as refused:
            parse(TOPIC, payload)
        assert secret not in refused.value.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_only_ever_raise_invalid_message(data: bytes) -> None:
    with pytest.raises(InvalidMessage):
        parse_message(TOPIC, data)


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from(sorted(GOOD)),
    reading_key=st.sampled_from(sorted(GOOD["readings"][0])),
    value=json_values,
    inner=st.booleans(),
)
def test_any_json_in_any_field_is_accepted_or_refused_cleanly(
    key: str, reading_key: str, value: object, inner: bool
) -> None:
    payload = copy.deepcopy(GOOD)
    if inner:
        payload["readings"][0][reading_key] = value
    else:
        payload[key] = value
    try:
        message = parse(TOPIC, payload)
    except InvalidMessage as exc:
        assert exc.message
    else:
        assert isinstance(message, ReadingMessage)


def test_what_the_gateway_publishes_is_accepted_as_published() -> None:
    """The contract from both sides: gateway/messages.py builds, the ingest accepts."""
    from bench.samples import KEY, mode5_frame
    from decoders.decode import Decoder
    from gateway.frames import Location, RawFrame
    from gateway.messages import raw_message, reading_message, topic, undecoded_meter_id
    from metergate.errors import DecodeError
    from metergate.profiles import load_profiles

    decoder = Decoder(load_profiles())
    frame = RawFrame(
        mode5_frame("1234.567"),
        datetime(2026, 10, 31, 22, 0, 3, tzinfo=UTC),
        "test",
        "wmbus",
        rssi_dbm=Decimal("-71.5"),
        location=Location(Decimal("56.9496"), Decimal("24.1052")),
    )
    reading_payload = reading_message(decoder.decode(frame.data, KEY), frame, "gw 7 Rīga")
    reading_payload.update(seq=1, msg_id="gw 7 Rīga:1")
    message = parse_message(
        topic("gw 7 Rīga", reading_payload["meter_id"], "reading"),
        json.dumps(reading_payload).encode(),
    )
    assert isinstance(message, ReadingMessage)
    assert Decimal("1234.567") in [r.value for r in message.readings]

    with pytest.raises(DecodeError) as failed:
        decoder.decode(frame.data, None)
    meter_id = undecoded_meter_id(frame, failed.value)
    raw_payload = raw_message(frame, failed.value, "gw 7 Rīga", meter_id)
    raw_payload.update(seq=2, msg_id="gw 7 Rīga:2")
    stored = parse_message(topic("gw 7 Rīga", meter_id, "raw"), json.dumps(raw_payload).encode())
    assert isinstance(stored, RawMessage)
    assert stored.frame == frame.data
    assert stored.meter_id == message.meter_id
    assert stored.error.type == "MissingKeyError"
