"""The fleet model: seeded identities and an exact, closed-form consumption model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim.consumption import LOCAL_STANDARD_TIME, PATTERNS, Event
from firmware_sim.fleet import DEFAULT_EPOCH, Fleet, SimClock
from firmware_sim.meter import LOCAL_ZONE, Identity, Meter, Replacement

EPOCH = DEFAULT_EPOCH
WEEK = timedelta(days=7)
IDENTITY = Identity("KAM", "12345678", 0x1B, 0x16)


def meter(**changes: object) -> Meter:
    fields: dict[str, object] = {
        "identity": IDENTITY,
        "epoch": EPOCH,
        "start_index": Decimal("100.000"),
        "noise_seed": 42,
    }
    fields.update(changes)
    return Meter(**fields)  # type: ignore[arg-type]


def local(day: int, hour: int, minute: int = 0) -> datetime:
    """An instant `day` days after the epoch's local (standard time) midnight."""
    midnight = EPOCH.astimezone(LOCAL_STANDARD_TIME).replace(hour=0, minute=0)
    return (midnight + timedelta(days=day, hours=hour, minutes=minute)).astimezone(UTC)


instants = st.integers(min_value=-86_400 * 400, max_value=86_400 * 800).map(
    lambda s: EPOCH + timedelta(seconds=s)
)


def test_the_same_seed_gives_the_same_fleet_and_readings() -> None:
    first = Fleet.generate(60, seed=5)
    second = Fleet.generate(60, seed=5)
    other = Fleet.generate(60, seed=6)
    assert first == second
    assert [m.describe() for m in first] != [m.describe() for m in other]
    later = EPOCH + timedelta(days=33, hours=7, seconds=11)
    assert [m.index_at(later) for m in first] == [m.index_at(later) for m in second]


def test_identities_are_unique_and_addressable() -> None:
    fleet = Fleet.generate(300, seed=11)
    meter_ids = [m.identity.meter_id for m in fleet]
    secondaries = [m.identity.secondary for m in fleet]
    assert len(set(meter_ids)) == len(meter_ids) == 300
    assert len(set(secondaries)) == 300
    assert [m.primary_address for m in fleet] == [*range(1, 251), *[0] * 50]
    for m in fleet:
        # F is the select wildcard: no generated meter carries it in a compared digit.
        assert "F" not in m.identity.secondary_text
        assert m.identity.id.isdigit()
        assert (m.key is None) == (m.security_mode == 0)
    # Serials recur under another maker, and batches share all but the last digits.
    ids = [m.identity.id for m in fleet]
    assert len(set(ids)) < len(ids)
    assert len({i[:6] for i in ids}) < len(set(ids)) * 0.7


def test_events_and_replacements_are_spread_over_the_fleet() -> None:
    fleet = Fleet.generate(400, seed=3)
    kinds = {e.kind for m in fleet for e in m.events}
    assert kinds == {"leak", "burst", "backflow", "dry"}
    replaced = [m for m in fleet if m.replacement is not None]
    assert replaced
    for m in replaced:
        rep = m.replacement
        assert rep is not None
        assert fleet.by_meter_id(rep.identity.meter_id) is m
        assert rep.identity.manufacturer == m.identity.manufacturer
        assert rep.identity.id != m.identity.id
    quiet = Fleet.generate(50, seed=3, events=False)
    assert all(not m.events and m.replacement is None for m in quiet)


@settings(max_examples=60, deadline=None)
@given(instants, st.integers(min_value=1, max_value=86_400 * 30))
def test_without_reverse_flow_the_index_never_goes_back(t: datetime, step: int) -> None:
    m = meter(pattern="building", daily_litres=4000)
    later = t + timedelta(seconds=step)
    assert m.index_at(later) >= m.index_at(t)
    assert m.index_at(t) == m.index_at(t).quantize(Decimal("0.001"))


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=-60, max_value=120), st.sampled_from(sorted(PATTERNS)))
def test_every_week_holds_exactly_the_weekly_volume(week: int, pattern: str) -> None:
    # The day-to-day variation sums to zero over each week (Monday 00:00 local standard time):
    # that is what keeps the index closed-form.
    m = meter(pattern=pattern, daily_litres=700)
    weekend = PATTERNS[pattern][1]
    weekly = 700 * (5 + 2 * weekend)
    monday = local(7 * week, 0)
    used = (m.index_at(monday + WEEK) - m.index_at(monday)) * 1000
    assert abs(used - Decimal(weekly.numerator) / weekly.denominator) < 1


def test_the_index_is_the_integral_of_the_flow() -> None:
    # Within one local hour the pattern's flow is constant: an hour's volume is flow x 1 h.
    m = meter(pattern="household", daily_litres=480)
    for day in range(7):
        for hour in range(24):
            start = local(day, hour)
            used = m.index_at(start + timedelta(hours=1)) - m.index_at(start)
            assert abs(used - m.flow_at(start + timedelta(minutes=30))) <= Decimal("0.001")


def test_the_epoch_reading_is_the_start_index() -> None:
    assert meter().index_at(EPOCH) == Decimal("100.000")


def test_a_household_uses_no_water_at_night_until_a_leak_starts() -> None:
    leak = Event("leak", local(10, 2, 30), None, 12)
    m = meter(pattern="household", events=(leak,))
    assert m.flow_at(local(9, 3)) == 0
    assert m.flags_at(local(9, 3)) == frozenset()
    assert m.flow_at(local(11, 3)) == Decimal("0.012")
    assert m.flags_at(local(11, 3)) == {"leak"}
    night = m.index_at(local(11, 5)) - m.index_at(local(11, 0))
    assert night == Decimal("0.060")  # 5 hours x 12 l/h


def test_a_burst_adds_its_flow_while_it_lasts() -> None:
    burst = Event("burst", local(3, 1), local(3, 2), 1500)
    m = meter(pattern="household", events=(burst,))
    assert m.flow_at(local(3, 1, 30)) == Decimal("1.500")
    assert m.flags_at(local(3, 1, 30)) == {"burst"}
    assert m.index_at(local(3, 2)) - m.index_at(local(3, 1)) == Decimal("1.500")
    assert m.flags_at(local(3, 2)) == frozenset()


def test_reverse_flow_runs_the_register_backwards() -> None:
    backflow = Event("backflow", local(4, 2), local(4, 3), -120)
    m = meter(pattern="household", events=(backflow,))
    assert m.flow_at(local(4, 2, 30)) == Decimal("-0.120")
    assert m.index_at(local(4, 3)) - m.index_at(local(4, 2)) == Decimal("-0.120")
    assert m.backward_at(local(4, 2)) == 0
    assert m.backward_at(local(5, 0)) == Decimal("0.120")


def test_a_dry_pipe_stops_all_flow_leaks_included() -> None:
    leak = Event("leak", local(1, 2), None, 10)
    dry = Event("dry", local(6, 8), local(7, 20))
    m = meter(pattern="building", daily_litres=5000, events=(leak, dry))
    assert m.flow_at(local(6, 12)) == 0
    assert m.flags_at(local(6, 12)) == {"leak", "dry"}
    assert m.index_at(local(7, 20)) == m.index_at(local(6, 8))
    assert m.index_at(local(7, 21)) > m.index_at(local(7, 20))


def test_a_replacement_brings_a_new_serial_counting_from_near_zero() -> None:
    new = Identity("KAM", "87654321", 0x1B, 0x16)
    at = local(20, 10)
    key = bytes(range(16))
    m = meter(replacement=Replacement(at, new, Decimal("0.012"), key, access_no=7))
    before = at - timedelta(seconds=1)
    assert m.identity_at(before) == IDENTITY
    assert m.index_at(before) > Decimal(100)
    assert m.identity_at(at) == new
    assert m.index_at(at) == Decimal("0.012")
    assert m.key_at(at) == key and m.key_at(before) is None
    assert Decimal("0.012") < m.index_at(at + timedelta(days=2)) < Decimal(5)
    assert m.access_no_at(at) == 7


def test_transmissions_keep_the_interval_and_count_the_access_number() -> None:
    m = meter(interval_s=120, phase_s=30, access_no=254)
    sent = list(m.transmissions(EPOCH, EPOCH + timedelta(minutes=10)))
    assert sent == [EPOCH + timedelta(seconds=30 + 120 * k) for k in range(5)]
    assert [m.access_no_at(t) for t in sent] == [255, 0, 1, 2, 3]
    assert m.access_no_at(EPOCH) == 254
    later = list(m.transmissions(EPOCH + timedelta(seconds=31), EPOCH + timedelta(seconds=400)))
    assert later[0] == EPOCH + timedelta(seconds=150)


def test_month_ends_are_read_at_local_midnight_by_the_meters_clock() -> None:
    m = meter(clock_offset_s=60, pattern="building", daily_litres=9000)
    now = datetime(2026, 3, 15, 12, tzinfo=UTC)
    ends = m.month_end_indexes(now, 3)
    assert [d.isoformat() for d, _ in ends] == ["2026-02-28", "2026-01-31", "2025-12-31"]
    boundary = datetime(2026, 3, 1, tzinfo=LOCAL_ZONE).astimezone(UTC) - timedelta(seconds=60)
    assert ends[0][1] == m.index_at(boundary)
    assert ends[0][1] > ends[1][1] > ends[2][1]


def test_bad_models_are_refused() -> None:
    with pytest.raises(ValueError):
        Event("leak", EPOCH, None, -5)
    with pytest.raises(ValueError):
        meter(start_index=Decimal("1.0001"))
    with pytest.raises(ValueError):
        meter().index_at(datetime(2026, 1, 1))  # naive
    with pytest.raises(ValueError):
        meter(events=(Event("dry", EPOCH, None), Event("dry", EPOCH + WEEK, None)))


def test_a_sim_clock_runs_at_its_speed() -> None:
    ticks = iter([100.0, 100.0, 110.0])
    clock = SimClock(EPOCH, speed=60, monotonic=lambda: next(ticks))
    assert clock.now() == EPOCH
    assert clock.now() == EPOCH + timedelta(minutes=10)
