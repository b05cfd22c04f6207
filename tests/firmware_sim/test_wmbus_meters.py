"""The simulated radio meters: their telegrams decode to the fleet model's values with the
fleet's keys, full and compact, in security modes 0, 5 and 7, on air in format A and B."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders.decode import Decoder
from decoders.telegram import Telegram
from decoders.wmbus_link import parse_dll, strip_crcs
from firmware_sim.fleet import Fleet
from firmware_sim.wmbus_meters import (
    FULL_EVERY,
    Transmission,
    WmbusFleet,
    WmbusMeter,
    radio_for,
)
from metergate.errors import DecodeError, DecryptionError, UnsupportedError
from metergate.profiles import load_profiles

START = datetime(2026, 2, 1, 6, tzinfo=UTC)
WINDOW = timedelta(minutes=20)


@cache
def air(seed: int = 1, corruption_rate: float = 0.0) -> WmbusFleet:
    fleet = Fleet.generate(50, seed)
    return WmbusFleet(fleet, modes=("T1", "C1", "S1"), corruption_rate=corruption_rate)


@cache
def transmissions(seed: int = 1) -> tuple[Transmission, ...]:
    return tuple(air(seed).transmissions(START, START + WINDOW))


def value(telegram: Telegram, quantity: str, storage: int = 0) -> object:
    (record,) = [
        r for r in telegram.records if r.spec.quantity == quantity and r.spec.storage == storage
    ]
    return record.value


def decode_all(
    seed: int, decoder: Decoder | None = None
) -> tuple[dict[str, list[tuple[Transmission, Telegram]]], Counter[str]]:
    """Every transmission decoded with the fleet's keys. Without profiles by default: a
    profile that matches a simulated identity renames and rescales its records."""
    decoder = decoder or Decoder()
    keys = air(seed).keys()
    decoded: dict[str, list[tuple[Transmission, Telegram]]] = {}
    errors: Counter[str] = Counter()
    for tx in transmissions(seed):
        key = keys.get(parse_dll(tx.frame)[1].meter_id)
        try:
            telegram = decoder.decode(tx.frame, key, link_format="none")
        except UnsupportedError as error:
            # A compact frame before any full frame of its model taught the format.
            assert tx.compact, error
            errors[type(error).__name__] += 1
            continue
        decoded.setdefault(tx.meter_id, []).append((tx, telegram))
    return decoded, errors


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_meter_decodes_to_the_fleet_model(seed: int) -> None:
    decoded, _ = decode_all(seed)
    meters = {m.meter.identity_at(START).meter_id: m for m in air(seed).meters}
    assert set(decoded) == set(meters)
    modes: Counter[int] = Counter()
    for meter_id, received in decoded.items():
        meter = meters[meter_id].meter
        for tx, telegram in received:
            assert telegram.address is not None
            assert telegram.address.meter_id == meter_id
            assert value(telegram, "volume") == meter.index_at(tx.at)
            assert value(telegram, "volume_backward") == meter.backward_at(tx.at)
            assert value(telegram, "volume_flow") == meter.flow_at(tx.at)
            ((month_end, index),) = meter.month_end_indexes(tx.at, 1)
            assert value(telegram, "date", 1) == month_end
            assert value(telegram, "volume", 1) == index
            assert telegram.tpl.access_no == meter.access_no_at(tx.at)
            security = telegram.security
            expected = meter.security_mode if meter.key_at(tx.at) else 0
            assert security.mode == expected
            assert security.decrypted == (expected != 0)
            modes[expected] += 1
    assert set(modes) == {0, 5, 7}


def test_the_meter_profiles_decode_every_simulated_telegram_too() -> None:
    decoded, errors = decode_all(1, Decoder(load_profiles()))
    assert len(decoded) == 50
    assert set(errors) <= {"UnsupportedError"}


def test_compact_meters_send_a_full_frame_every_eighth_access_number() -> None:
    by_meter = {m.meter.identity_at(START).meter_id: m for m in air().meters if m.radio.compact}
    assert by_meter
    seen: Counter[bool] = Counter()
    for tx in transmissions():
        seen[tx.compact] += 1
        if tx.meter_id in by_meter:
            access = by_meter[tx.meter_id].meter.access_no_at(tx.at)
            assert tx.compact == (access % FULL_EVERY != 0)
        else:
            assert not tx.compact
    assert seen[True] and seen[False]


def test_a_compact_telegram_carries_the_values_of_the_full_one() -> None:
    meter = next(m for m in air().meters if m.radio.compact and m.meter.key)
    t = next(meter.meter.transmissions(START, START + WINDOW))
    key = meter.meter.key_at(t)
    decoder = Decoder()
    with pytest.raises(UnsupportedError, match="not learned"):
        decoder.decode(meter.telegram(t, compact=True), key, link_format="none")
    full = decoder.decode(meter.telegram(t, compact=False), key, link_format="none")
    compact = decoder.decode(meter.telegram(t, compact=True), key, link_format="none")
    assert compact.tpl.ci == 0x7B and full.tpl.ci == 0x7A
    assert [r.value for r in compact.records] == [r.value for r in full.records]
    assert len(meter.telegram(t, compact=True)) < len(meter.telegram(t, compact=False))


def test_on_air_frames_carry_the_crcs_of_their_format() -> None:
    formats: Counter[tuple[str, str]] = Counter()
    for tx in transmissions():
        stripped, link_format = strip_crcs(tx.on_air, tx.frame_format)
        assert stripped == tx.frame
        assert link_format == tx.frame_format
        assert tx.frame_format == "A" or tx.link_mode == "C1"
        formats[tx.link_mode, tx.frame_format] += 1
    assert {("T1", "A"), ("C1", "A"), ("C1", "B"), ("S1", "A")} <= set(formats)


def test_damaged_frames_fail_their_crc_at_the_seeded_rate() -> None:
    damaged = WmbusFleet(air().fleet, corruption_rate=0.2).transmissions(START, START + WINDOW)
    bad = [tx for tx in damaged if not tx.crc_ok]
    assert 0.1 < len(bad) / len(damaged) < 0.3
    for tx in bad:
        with pytest.raises(DecodeError):
            strip_crcs(tx.on_air, tx.frame_format)
    for tx in damaged:
        if tx.crc_ok:
            assert strip_crcs(tx.on_air, tx.frame_format)[0] == tx.frame
    again = WmbusFleet(air().fleet, corruption_rate=0.2).transmissions(START, START + WINDOW)
    assert again == damaged  # the damage is seeded


def test_the_same_seed_gives_the_same_air_and_another_seed_another() -> None:
    fleet = air().fleet
    assert WmbusFleet(fleet).transmissions(START, START + WINDOW) == list(
        WmbusFleet(fleet).transmissions(START, START + WINDOW)
    )
    other = WmbusFleet(fleet, seed=99)
    assert [m.radio for m in other.meters] != [m.radio for m in WmbusFleet(fleet).meters]


def test_the_timeline_plays_the_schedule_in_steps() -> None:
    fleet = air()
    timeline = fleet.timeline(START)
    stepped = []
    t = START
    while t < START + WINDOW:
        t += timedelta(seconds=7.5)
        stepped += timeline.until(t)
    expected = list(fleet.schedule(START, t))
    assert [(when, m.meter.identity.meter_id) for when, m in stepped] == [
        (when, m.meter.identity.meter_id) for when, m in expected
    ]


def test_a_wrong_key_fails_the_decryption() -> None:
    decoder = Decoder()
    for tx in transmissions()[:200]:
        meter = air().fleet.by_meter_id(tx.meter_id)
        if meter.key_at(tx.at) is None or tx.compact:
            continue
        with pytest.raises(DecryptionError):
            decoder.decode(tx.frame, bytes(16), link_format="none")


def test_radio_habits_are_checked() -> None:
    meter = air().meters[0].meter
    with pytest.raises(ValueError, match="link modes"):
        radio_for(meter, ("T2",), 0)
    with pytest.raises(ValueError, match="link modes"):
        radio_for(meter, (), 0)
    with pytest.raises(ValueError, match="probability"):
        WmbusMeter(meter, radio_for(meter, ("T1",), 0), corruption_rate=1.5)
    assert radio_for(meter, ("T1",), 0).frame_format == "A"


@settings(max_examples=40, deadline=None)
@given(
    index=st.integers(0, 49),
    seconds=st.integers(0, 90 * 86400),
    mode=st.sampled_from([0, 5, 7]),
    compact=st.booleans(),
)
def test_any_meter_at_any_instant_round_trips(
    index: int, seconds: int, mode: int, compact: bool
) -> None:
    """Whatever the instant (events, replacements, month ends), the telegram decodes back to
    the model's register in every security mode, full and compact."""
    base = air().meters[index]
    key = base.meter.key or bytes(range(16))
    meter = WmbusMeter(
        replace(base.meter, key=key, security_mode=mode, replacement=None), base.radio
    )
    t = START + timedelta(seconds=seconds)
    decoder = Decoder()
    full = decoder.decode(meter.telegram(t, compact=False), key, link_format="none")
    telegram = decoder.decode(meter.telegram(t, compact=compact), key, link_format="none")
    assert value(telegram, "volume") == meter.meter.index_at(t)
    assert [r.value for r in telegram.records] == [r.value for r in full.records]
    assert telegram.security.mode == mode
    assert isinstance(value(telegram, "error_flags"), Decimal)
