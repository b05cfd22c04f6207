"""Plausibility of incoming readings: backwards, too fast, restarts, spikes; kept and marked."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.plausibility import (
    Limits,
    Verdict,
    check_reading,
    detect_replacements,
    findings,
    implausible_alert,
    q4_from_q3,
    screen,
)
from ingest.series import Reading, Replacement
from tests.ingest.engine_data import manual, utc

T0 = utc(2026, 10, 10)
HOUR = timedelta(hours=1)
# A DN15 household meter: Q3 = 2.5 m3/h, so Q4 = 3.125 m3/h.
HOUSEHOLD = Limits(max_flow=q4_from_q3(Decimal("2.5")))


def at(hours: float, value: str, **kwargs: object) -> Reading:
    return Reading(T0 + timedelta(hours=hours), Decimal(value), **kwargs)  # type: ignore[arg-type]


def test_q4_is_five_quarters_of_q3() -> None:
    assert q4_from_q3(Decimal("2.5")) == Decimal("3.125")
    assert q4_from_q3(Decimal("4")) == Decimal("5.00")


def test_the_first_reading_and_a_rising_index_are_plausible() -> None:
    assert check_reading(at(0, "10.000"), None).status == "plausible"
    verdict = check_reading(at(1, "10.400"), at(0, "10.000"), limits=HOUSEHOLD)
    assert (verdict.status, verdict.reason) == ("plausible", "")


def test_an_index_going_backwards_is_implausible() -> None:
    verdict = check_reading(at(1, "99.000"), at(0, "100.000"))
    assert (verdict.status, verdict.reason) == ("implausible", "backwards")
    assert verdict.reference == at(0, "100.000")
    assert not verdict.usable


def test_an_index_restarting_near_zero_is_a_restart_not_an_error() -> None:
    verdict = check_reading(at(5, "0.040"), at(0, "861.000"))
    assert (verdict.status, verdict.reason) == ("reset", "restart")
    assert verdict.usable
    assert verdict.replacement("KAM-1") == Replacement(
        at(5, "0").measured_at, "KAM-1", Decimal("861.000"), "KAM-1", Decimal("0.040"), True
    )
    above_ceiling = check_reading(at(5, "12.000"), at(0, "861.000"))
    assert above_ceiling.status == "implausible"


def test_a_customer_reading_near_zero_is_a_typo_not_a_restart() -> None:
    verdict = check_reading(manual(T0 + HOUR, "0.500"), at(0, "861.000"))
    assert (verdict.status, verdict.reason) == ("implausible", "backwards")


def test_a_recorded_replacement_gives_the_new_reference() -> None:
    swap = Replacement(T0 + HOUR, "A", Decimal("861.000"), "A", Decimal("0.000"))
    verdict = check_reading(at(2, "0.100"), at(0, "860.000"), replacements=[swap])
    assert verdict.status == "plausible"
    assert verdict.reference is not None and verdict.reference.value == Decimal("0.000")
    below_start = check_reading(
        at(2, "0.100"),
        at(0, "860.000"),
        replacements=[Replacement(T0 + HOUR, "A", Decimal("861.000"), "A", Decimal("0.500"))],
    )
    assert (below_start.status, below_start.reason) == ("implausible", "backwards")


def test_a_jump_beyond_the_maximum_flow_is_too_fast() -> None:
    # Two hours at Q4 = 3.125 m3/h allow 6.25 m3, plus one display step of 0.001.
    assert check_reading(at(2, "16.251"), at(0, "10.000"), limits=HOUSEHOLD).usable
    verdict = check_reading(at(2, "16.252"), at(0, "10.000"), limits=HOUSEHOLD)
    assert (verdict.status, verdict.reason) == ("implausible", "too_fast")
    assert verdict.allowed == Decimal("6.251")
    assert check_reading(at(2, "99.000"), at(0, "10.000")).usable  # no Q4 known: no rate check


def test_a_late_reading_above_the_next_one_is_the_outlier() -> None:
    verdict = check_reading(at(1, "10.900"), at(0, "10.000"), following=at(2, "10.200"))
    assert (verdict.status, verdict.reason) == ("implausible", "ahead_of_meter")
    fine = check_reading(at(1, "10.100"), at(0, "10.000"), following=at(2, "10.200"))
    assert fine.usable


def test_screening_blames_a_spike_on_itself_not_on_the_readings_after_it() -> None:
    readings = [at(0, "10.000"), at(1, "10.800"), at(2, "10.200"), at(3, "10.300")]
    verdicts = screen(readings, HOUSEHOLD)
    assert [(v.status, v.reason) for v in verdicts] == [
        ("plausible", ""),
        ("implausible", "ahead_of_meter"),
        ("plausible", ""),
        ("plausible", ""),
    ]


def test_screening_keeps_every_reading_and_marks_the_bad_ones() -> None:
    readings = [
        at(0, "10.000"),
        at(1, "9.000"),  # backwards
        at(2, "10.200"),
        at(3, "0.010"),  # restart
        at(4, "0.100"),
        manual(T0 + 5 * HOUR, "0.050"),  # below the meter: misread
        at(6, "0.300", implausible=True),  # marked before
        Reading(T0, Decimal("7"), storage=1),  # a register: not screened
    ]
    verdicts = screen(readings)
    assert [(v.reading.value, v.status, v.reason) for v in verdicts] == [
        (Decimal("10.000"), "plausible", ""),
        (Decimal("9.000"), "implausible", "backwards"),
        (Decimal("10.200"), "plausible", ""),
        (Decimal("0.010"), "reset", "restart"),
        (Decimal("0.100"), "plausible", ""),
        (Decimal("0.050"), "implausible", "backwards"),
        (Decimal("0.300"), "implausible", "marked"),
    ]
    assert [r.old_final for r in detect_replacements("M", verdicts)] == [Decimal("10.200")]


def test_an_implausible_reading_opens_an_alert_with_its_evidence() -> None:
    verdict = check_reading(at(1, "9.000"), at(0, "10.000"))
    alert = implausible_alert(verdict)
    assert alert is not None
    assert (alert.action, alert.kind, alert.rule, alert.at) == (
        "open",
        "implausible_reading",
        "plausibility",
        T0 + HOUR,
    )
    assert alert.evidence["reason"] == "backwards"
    assert alert.evidence["reading"]["value"] == "9.000"
    assert alert.evidence["reference"]["value"] == "10.000"
    assert implausible_alert(check_reading(at(1, "11"), at(0, "10"))) is None


def test_naive_instants_are_refused() -> None:
    from datetime import datetime

    with pytest.raises(ValueError, match="timezone-aware"):
        screen([Reading(datetime(2026, 1, 1), Decimal(1))])


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=1, max_value=7200), st.integers(min_value=0)),
        min_size=1,
        max_size=40,
    ).map(lambda xs: [(s, min(u, s * 3125 // 3600)) for s, u in xs])
)
def test_an_index_within_the_maximum_flow_is_always_plausible(
    steps: list[tuple[int, int]],
) -> None:
    # Each step: seconds elapsed and litres used, at most Q4 = 3.125 m3/h allows.
    t, litres, readings = T0, 0, []
    for seconds, used in steps:
        t += timedelta(seconds=seconds)
        litres += used
        readings.append(Reading(t, Decimal(litres).scaleb(-3)))
    verdicts: list[Verdict] = screen(readings, HOUSEHOLD)
    assert all(v.status == "plausible" for v in verdicts)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(min_value=20_000, max_value=10**6), min_size=2, max_size=30))
def test_screened_usable_meter_readings_never_go_backwards(values: list[int]) -> None:
    readings = [Reading(T0 + i * HOUR, Decimal(v).scaleb(-3)) for i, v in enumerate(values)]
    usable = [v.reading.value for v in screen(readings) if v.usable]
    assert usable == sorted(usable)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=30),
    limited=st.booleans(),
    manual_every=st.integers(min_value=2, max_value=7),
)
def test_findings_are_what_screening_finds_beyond_plain_plausible(
    values: list[int], limited: bool, manual_every: int
) -> None:
    readings = [
        Reading(
            T0 + i * HOUR,
            Decimal(v).scaleb(-3),
            source="manual" if i % manual_every == manual_every - 1 else "wmbus",
        )
        for i, v in enumerate(values)
    ]
    limits = HOUSEHOLD if limited else Limits()
    full = screen(readings, limits)
    assert findings(readings, limits) == [v for v in full if v.status != "plausible"]
    assert len(full) == len(readings)
