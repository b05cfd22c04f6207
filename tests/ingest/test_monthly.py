"""The monthly billing determinant (DESIGN.md section 5): boundaries, methods, revisions,
meter replacement. Pure engine tests; expected values are worked out by hand in the comments."""

from __future__ import annotations

import itertools
import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.boundaries import (
    last_closed_period,
    local_midnight,
    month_boundary,
    parse_period,
    period_of,
)
from ingest.monthly import compute_monthly, needed_windows
from ingest.monthly_values import (
    Evidence,
    MonthlyResult,
    MonthlyRules,
    consumption,
    supersedes,
)
from ingest.plausibility import detect_replacements, screen
from ingest.series import Reading, Replacement
from tests.ingest.engine_data import FAR_FUTURE, manual, register, series, utc

RIGA = ZoneInfo("Europe/Riga")
OCTOBER = date(2026, 10, 1)
OCT_END = utc(2026, 10, 31, 22)  # 2026-11-01 00:00 EET
HOUR = timedelta(hours=1)


# --- boundaries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("month", "instant"),
    [
        (1, utc(2026, 1, 31, 22)),
        (2, utc(2026, 2, 28, 22)),
        (3, utc(2026, 3, 31, 21)),  # summer time since Sunday 29 March
        (4, utc(2026, 4, 30, 21)),
        (5, utc(2026, 5, 31, 21)),
        (6, utc(2026, 6, 30, 21)),
        (7, utc(2026, 7, 31, 21)),
        (8, utc(2026, 8, 31, 21)),
        (9, utc(2026, 9, 30, 21)),
        (10, utc(2026, 10, 31, 22)),  # winter time again since Sunday 25 October
        (11, utc(2026, 11, 30, 22)),
        (12, utc(2026, 12, 31, 22)),
    ],
)
def test_boundary_is_local_midnight_of_the_next_first_for_every_month(
    month: int, instant: datetime
) -> None:
    assert month_boundary(date(2026, month, 1), RIGA) == instant
    assert month_boundary(date(2026, month, 17), RIGA) == instant  # any day names its month


def test_period_of_and_the_last_closed_period_follow_local_time() -> None:
    assert period_of(utc(2026, 10, 31, 21, 59), RIGA) == OCTOBER  # 23:59 local
    assert period_of(OCT_END, RIGA) == date(2026, 11, 1)
    assert last_closed_period(utc(2026, 10, 31, 21, 59), RIGA) == date(2026, 9, 1)
    assert last_closed_period(OCT_END, RIGA) == OCTOBER


def test_a_day_whose_midnight_does_not_exist_begins_at_the_transition() -> None:
    # Chile springs forward at 00:00 local (04:00 UTC) on 6 September 2026: the day starts then.
    santiago = ZoneInfo("America/Santiago")
    assert local_midnight(date(2026, 9, 6), santiago) == utc(2026, 9, 6, 4)
    assert local_midnight(date(2026, 9, 7), santiago) == utc(2026, 9, 7, 3)


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "26-10", "2026/10", "", "2026-1", "x"])
def test_a_bad_period_is_refused_with_its_text(text: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        parse_period(text)


def test_a_period_parses_to_its_first_day() -> None:
    assert parse_period(" 2026-10 ") == OCTOBER


# --- interpolation across DST days --------------------------------------------------------


def test_a_23_hour_day_in_the_gap_counts_23_hours() -> None:
    # 100 l/h from 2026-03-27 22:00Z (28 March 00:00 EET) to 2026-04-02 21:00Z (3 April
    # 00:00 EEST): 143 real hours, 14.3 m3. The boundary 2026-03-31 21:00Z is 95 real hours in
    # (four local days, one of them 29 March with 23 hours): 100 + 9.5.
    readings = [
        Reading(utc(2026, 3, 27, 22), Decimal("100.000")),
        Reading(utc(2026, 4, 2, 21), Decimal("114.300")),
    ]
    result = compute_monthly("M", date(2026, 3, 1), readings, now=FAR_FUTURE, zone=RIGA)
    assert result is not None
    assert (result.method, result.value) == ("interpolated", Decimal("109.500"))
    assert result.boundary == utc(2026, 3, 31, 21)


def test_a_25_hour_day_in_the_gap_counts_25_hours() -> None:
    # 100 l/h from 2026-10-24 21:00Z (25 October 00:00 EEST) to 2026-11-01 10:00Z: 181 hours,
    # 18.1 m3; the boundary is 169 real hours in (seven local days, 25 October with 25 hours).
    readings = [
        Reading(utc(2026, 10, 24, 21), Decimal("200.000")),
        Reading(utc(2026, 11, 1, 10), Decimal("218.100")),
    ]
    rules = MonthlyRules(max_gap=timedelta(days=8))
    result = compute_monthly("M", OCTOBER, readings, now=FAR_FUTURE, rules=rules)
    assert result is not None
    assert (result.method, result.value) == ("interpolated", Decimal("216.900"))


def test_interpolation_rounds_half_to_even_at_the_resolution() -> None:
    def at_boundary(after: str) -> Decimal:
        readings = [
            Reading(OCT_END - 2 * HOUR, Decimal("1.000")),
            Reading(OCT_END + 2 * HOUR, Decimal(after)),
        ]
        result = compute_monthly("M", OCTOBER, readings, now=FAR_FUTURE)
        assert result is not None and result.method == "interpolated"
        return result.value

    assert at_boundary("1.001") == Decimal("1.000")  # exactly 1.0005
    assert at_boundary("1.003") == Decimal("1.002")  # exactly 1.0015


def test_finer_readings_keep_their_own_resolution() -> None:
    readings = [
        Reading(OCT_END - 2 * HOUR, Decimal("1.0000")),
        Reading(OCT_END + 2 * HOUR, Decimal("1.0003")),
    ]
    result = compute_monthly("M", OCTOBER, readings, now=FAR_FUTURE)
    assert result is not None and result.value == Decimal("1.0002")  # 1.00015, half to even


# --- the order of trust -------------------------------------------------------------------


def _around_october_end() -> list[Reading]:
    # 100 l/h from 29 October 00:00Z: 70 hours to the boundary, so the index there is 107.
    return series(utc(2026, 10, 29), utc(2026, 11, 3), HOUR, 100)


@pytest.mark.parametrize(
    "stamp",
    [
        utc(2026, 10, 31),  # the date 2026-10-31 placed at midnight UTC
        utc(2026, 10, 30, 22),  # 2026-10-31 00:00 local
        OCT_END,  # the boundary itself, 2026-11-01 00:00 local
        utc(2026, 11, 1),  # the date 2026-11-01 placed at midnight UTC
    ],
)
def test_a_month_end_register_beats_an_actual_reading(stamp: datetime) -> None:
    readings = [*_around_october_end(), register(stamp, "106.990")]
    result = compute_monthly("M", OCTOBER, readings, now=FAR_FUTURE)
    assert result is not None
    assert (result.method, result.value) == ("register", Decimal("106.990"))
    assert result.evidence == (
        Evidence("register", stamp, Decimal("106.990"), 1, "wmbus", "register-1"),
    )
    assert result.spread == timedelta(0)


@pytest.mark.parametrize("stamp", [utc(2026, 9, 30), utc(2026, 10, 30), utc(2026, 11, 2)])
def test_a_register_of_another_date_is_not_this_months(stamp: datetime) -> None:
    readings = [*_around_october_end(), register(stamp, "106.990")]
    result = compute_monthly("M", OCTOBER, readings, now=FAR_FUTURE)
    assert result is not None and result.method == "actual"


def test_registers_that_disagree_are_not_trusted() -> None:
    readings = [
        *_around_october_end(),
        register(utc(2026, 10, 31), "106.990", storage=1),
        register(utc(2026, 10, 31), "105.000", storage=2),
    ]
    result = compute_monthly("M", OCTOBER, readings, now=FAR_FUTURE)
    assert result is not None and result.method == "actual"


def test_actual_beats_interpolated_and_interpolated_needs_no_near_reading() -> None:
    readings = _around_october_end()
    result = compute_monthly("M", OCTOBER, readings, now=FAR_FUTURE)
    assert result is not None
    assert (result.method, result.value) == ("actual", Decimal("107.000"))
    assert [e.measured_at for e in result.evidence] == [OCT_END]

    thinned = [r for r in readings if abs(r.measured_at - OCT_END) >= 5 * HOUR]
    result = compute_monthly("M", OCTOBER, thinned, now=FAR_FUTURE)
    assert result is not None
    assert (result.method, result.value) == ("interpolated", Decimal("107.000"))
    assert [(e.role, e.measured_at) for e in result.evidence] == [
        ("before", OCT_END - 5 * HOUR),
        ("after", OCT_END + 5 * HOUR),
    ]


def test_actual_takes_the_nearest_reading_within_the_tolerance() -> None:
    readings = [
        Reading(OCT_END - 50 * timedelta(minutes=1), Decimal("10.000")),
        Reading(OCT_END + 20 * timedelta(minutes=1), Decimal("10.100")),
    ]
    result = compute_monthly("M", OCTOBER, readings, now=FAR_FUTURE)
    assert result is not None
    assert (result.method, result.value) == ("actual", Decimal("10.100"))
    assert result.spread == timedelta(minutes=20)


def test_readings_marked_or_found_implausible_are_not_used() -> None:
    readings = [r for r in _around_october_end() if r.measured_at != OCT_END]
    marked = Reading(OCT_END, Decimal("107.000"), implausible=True)
    backwards = Reading(OCT_END + timedelta(minutes=10), Decimal("50.000"))
    result = compute_monthly("M", OCTOBER, [*readings, marked, backwards], now=FAR_FUTURE)
    assert result is not None
    assert result.method == "actual"
    assert result.evidence[0].measured_at in (OCT_END - HOUR, OCT_END + HOUR)


def test_no_result_before_the_boundary() -> None:
    readings = _around_october_end()
    assert compute_monthly("M", OCTOBER, readings, now=OCT_END - timedelta(seconds=1)) is None
    assert compute_monthly("M", date(2026, 11, 1), readings, now=FAR_FUTURE) is not None


# --- gaps: interpolated, or estimated when too long ---------------------------------------


def _august_to(end: datetime, first: str = "100.000") -> list[Reading]:
    return series(utc(2026, 8, 1), end, HOUR, 100, first=Decimal(first))


def test_a_boundary_in_a_short_gap_is_interpolated() -> None:
    # 100 l/h from 1 August 00:00Z; a gap from 29 October to 4 November (6 days). The index on
    # the line at the boundary: 2206 hours after the start, 100 + 220.6.
    readings = [
        r
        for r in _august_to(utc(2026, 11, 10))
        if not utc(2026, 10, 29) < r.measured_at < utc(2026, 11, 4)
    ]
    result = compute_monthly("M", OCTOBER, readings, now=FAR_FUTURE)
    assert result is not None
    assert (result.method, result.value) == ("interpolated", Decimal("320.600"))
    assert result.spread == timedelta(days=6)


def test_a_boundary_in_a_long_gap_is_estimated_from_the_last_90_days() -> None:
    # The gap runs from 27 October 00:00Z (index 308.8 after 2088 hours) to 5 November: 9 days.
    # The last 90 days give 2.4 m3 a day; 118 hours to the boundary add 11.8.
    readings = [
        r
        for r in _august_to(utc(2026, 11, 10))
        if not utc(2026, 10, 27) < r.measured_at < utc(2026, 11, 5)
    ]
    assert compute_monthly("M", OCTOBER, readings, now=OCT_END + timedelta(days=1)) is None
    result = compute_monthly("M", OCTOBER, readings, now=OCT_END + timedelta(days=3))
    assert result is not None
    assert (result.method, result.value) == ("estimated", Decimal("320.600"))
    assert [(e.role, e.measured_at, e.value) for e in result.evidence] == [
        ("anchor", utc(2026, 10, 27), Decimal("308.800")),
        ("bound", utc(2026, 11, 5), Decimal("330.400")),
    ]
    assert [(p.basis, p.per_day) for p in result.rates] == [("last_90_days", Decimal("2.4"))]


def test_an_estimate_never_passes_the_first_reading_after_the_boundary() -> None:
    before = _august_to(utc(2026, 10, 27))
    after = [Reading(utc(2026, 11, 5), Decimal("315.000"))]
    result = compute_monthly("M", OCTOBER, [*before, *after], now=FAR_FUTURE)
    assert result is not None
    assert (result.method, result.value) == ("estimated", Decimal("315.000"))


def _last_october_and_this_summer() -> list[Reading]:
    # October 2025 at 1.2 m3 a day (50 l/h), read daily; 2026 at 100 l/h until 27 October.
    last_year = series(
        utc(2025, 9, 20), utc(2025, 11, 10), timedelta(days=1), 50, first=Decimal(10)
    )
    return [*last_year, *_august_to(utc(2026, 10, 27))]


def test_an_estimate_uses_the_same_month_last_year_first() -> None:
    # 118 hours at last October's 50 l/h: 308.8 + 5.9.
    result = compute_monthly("M", OCTOBER, _last_october_and_this_summer(), now=FAR_FUTURE)
    assert result is not None
    assert (result.method, result.value) == ("estimated", Decimal("314.700"))
    assert [(p.basis, p.per_day) for p in result.rates] == [
        ("same_period_last_year", Decimal("1.2"))
    ]


def test_the_needed_windows_hold_every_reading_the_engine_uses() -> None:
    readings = _last_october_and_this_summer()
    windows = needed_windows(OCTOBER)
    inside = [r for r in readings if any(a <= r.measured_at <= b for a, b in windows)]
    assert len(inside) < len(readings)
    assert compute_monthly("M", OCTOBER, inside, now=FAR_FUTURE) == compute_monthly(
        "M", OCTOBER, readings, now=FAR_FUTURE
    )


def test_an_estimate_from_a_reading_after_the_boundary_goes_back() -> None:
    # Only readings after the boundary: 11 November 00:00Z back to the boundary is 242 hours.
    readings = series(utc(2026, 11, 11), utc(2026, 12, 20), HOUR, 100, first=Decimal("50.000"))
    result = compute_monthly("M", OCTOBER, readings, now=FAR_FUTURE)
    assert result is not None
    assert (result.method, result.value) == ("estimated", Decimal("25.800"))


def test_no_reading_at_all_gives_no_result() -> None:
    assert compute_monthly("M", OCTOBER, [], now=FAR_FUTURE) is None


# --- customer readings --------------------------------------------------------------------


def _daily_until_october_10() -> list[Reading]:
    # 0.25 m3 a day from 15 July; 71.75 on 10 October, then the meter is silent.
    return [
        Reading(utc(2026, 7, 15) + timedelta(days=d), Decimal("50.000") + Decimal("0.250") * d)
        for d in range(88)
    ]


def test_a_customer_reading_on_the_26th_is_moved_to_the_boundary() -> None:
    # Read 75.500 on 26 October 09:00Z; 133 hours to the boundary at 0.25 m3 a day (the last 90
    # days) add 1.3854166..., rounded half to even: 76.885.
    readings = [*_daily_until_october_10(), manual(utc(2026, 10, 26, 9), "75.500")]
    assert compute_monthly("M", OCTOBER, readings, now=OCT_END + HOUR) is None
    result = compute_monthly("M", OCTOBER, readings, now=FAR_FUTURE)
    assert result is not None
    assert (result.method, result.value) == ("customer", Decimal("76.885"))
    assert [(e.role, e.source, e.value) for e in result.evidence] == [
        ("customer", "manual", Decimal("75.500")),
        ("bound", "wmbus", Decimal("71.750")),
    ]
    assert [(p.basis, p.per_day) for p in result.rates] == [("last_90_days", Decimal("0.25"))]


def test_a_customer_reading_too_far_from_the_boundary_anchors_an_estimate() -> None:
    readings = [*_daily_until_october_10(), manual(utc(2026, 10, 15, 9), "73.000")]
    result = compute_monthly("M", OCTOBER, readings, now=FAR_FUTURE)
    assert result is not None
    assert result.method == "estimated"
    assert result.evidence[0].role == "anchor" and result.evidence[0].source == "manual"
    assert result.value > Decimal("73.000")


def test_meter_readings_around_the_boundary_beat_a_customer_reading() -> None:
    readings = [*_around_october_end(), manual(utc(2026, 10, 26, 9), "90.000")]
    result = compute_monthly("M", OCTOBER, readings, now=FAR_FUTURE)
    assert result is not None and result.method == "actual"


def test_a_customer_reading_below_the_meter_is_implausible_and_ignored() -> None:
    readings = [*_daily_until_october_10(), manual(utc(2026, 10, 26, 9), "60.000")]
    result = compute_monthly("M", OCTOBER, readings, now=FAR_FUTURE)
    assert result is not None and result.method == "estimated"
    assert result.evidence[0].source == "wmbus"


# --- meter replacement --------------------------------------------------------------------


def test_a_meter_replaced_mid_month_is_never_billed_negative() -> None:
    # Old meter A: 100 l/h from 25 September 00:00Z (500.000) until 15 October 10:00Z (549.000),
    # removed at 10:30 with 549.050. New meter B starts at 0.012 and reads hourly from 11:00.
    old = series(utc(2026, 9, 25), utc(2026, 10, 15, 10), HOUR, 100, first=Decimal("500.000"))
    new = series(utc(2026, 10, 15, 11), utc(2026, 11, 3), HOUR, 100, first=Decimal("0.062"))
    swap = Replacement(utc(2026, 10, 15, 10, 30), "A", Decimal("549.050"), "B", Decimal("0.012"))
    september = date(2026, 9, 1)
    a_sep = compute_monthly("A", september, old, now=FAR_FUTURE, replacements=[swap])
    b_oct = compute_monthly("B", OCTOBER, new, now=FAR_FUTURE, replacements=[swap])
    assert a_sep is not None and a_sep.value == Decimal("514.100")
    assert b_oct is not None and (b_oct.method, b_oct.value) == ("actual", Decimal("39.562"))
    assert compute_monthly("A", OCTOBER, old, now=FAR_FUTURE, replacements=[swap]) is None
    assert compute_monthly("B", september, new, now=FAR_FUTURE, replacements=[swap]) is None

    used = consumption(a_sep, b_oct, [swap])
    # 34.950 on A and 39.550 on B: 745 hours at 100 l/h, as if nothing had been swapped.
    assert used.parts == (Decimal("34.950"), Decimal("39.550"))
    assert (used.volume, used.clamped) == (Decimal("74.500"), False)


def test_the_new_meter_interpolates_from_its_start_index() -> None:
    swap = Replacement(OCT_END - 3 * HOUR, "A", Decimal("9.000"), "B", Decimal("0.000"))
    new = [Reading(OCT_END + 3 * HOUR, Decimal("0.600"))]
    result = compute_monthly("B", OCTOBER, new, now=FAR_FUTURE, replacements=[swap])
    assert result is not None
    assert (result.method, result.value) == ("interpolated", Decimal("0.300"))
    assert result.evidence[0].source == "replacement"


def test_an_index_restarting_in_place_is_a_replacement() -> None:
    # Meter C: 100 l/h from 25 September (800.000) to 20 October 10:00Z (861.000); then the index
    # restarts: 0.200 at 14:00Z and on. The four hours of the swap and the 0.2 the new register
    # started with are not billed: 74.5 - 0.4.
    old = series(utc(2026, 9, 25), utc(2026, 10, 20, 10), HOUR, 100, first=Decimal("800.000"))
    new = series(utc(2026, 10, 20, 14), utc(2026, 11, 3), HOUR, 100, first=Decimal("0.200"))
    readings = [*old, *new]
    c_sep = compute_monthly("C", date(2026, 9, 1), readings, now=FAR_FUTURE)
    c_oct = compute_monthly("C", OCTOBER, readings, now=FAR_FUTURE)
    assert c_sep is not None and c_sep.value == Decimal("814.100")
    assert c_oct is not None and (c_oct.method, c_oct.value) == ("actual", Decimal("27.400"))
    restarts = detect_replacements("C", screen(readings))
    assert restarts == [
        Replacement(
            utc(2026, 10, 20, 14), "C", Decimal("861.000"), "C", Decimal("0.200"), detected=True
        )
    ]
    used = consumption(c_sep, c_oct, restarts)
    assert (used.volume, used.clamped) == (Decimal("74.100"), False)
    assert consumption(c_sep, c_oct).clamped  # without the restart it would be negative


def test_no_interpolation_across_a_restart() -> None:
    old = series(utc(2026, 10, 25), OCT_END - 2 * HOUR, HOUR, 100, first=Decimal("800.000"))
    new = series(OCT_END + 4 * HOUR, utc(2026, 11, 5), HOUR, 100, first=Decimal("0.300"))
    result = compute_monthly("C", OCTOBER, [*old, *new], now=FAR_FUTURE)
    assert result is not None
    # The old index holds until the restart is seen; nothing of the new one leaks in.
    assert (result.method, result.value) == ("interpolated", old[-1].value)
    assert [e.source for e in result.evidence] == ["wmbus", "replacement"]


def test_consumption_refuses_a_chain_that_does_not_lead_to_the_closing_meter() -> None:
    a = _result("A", "actual", "10", [Evidence("reading", OCT_END, Decimal(10))])
    b = _result("B", "actual", "2", [Evidence("reading", OCT_END, Decimal(2))])
    with pytest.raises(ValueError, match="no replacement leads from A to B"):
        consumption(a, b)


# --- revisions ----------------------------------------------------------------------------


def _result(
    meter: str, method: str, value: str, evidence: list[Evidence], period: date = OCTOBER
) -> MonthlyResult:
    return MonthlyResult.from_row(
        meter_id=meter,
        period=period,
        boundary=month_boundary(period),
        value=Decimal(value),
        unit="m3",
        method=method,
        evidence={"readings": [e.to_json() for e in evidence]},
    )


def test_a_more_trusted_method_always_replaces_a_less_trusted_one() -> None:
    near = [Evidence("reading", OCT_END, Decimal(5))]
    order = ["register", "actual", "interpolated", "customer", "estimated"]
    for better_index, better in enumerate(order):
        for worse in order[better_index + 1 :]:
            old, new = _result("M", worse, "5", near), _result("M", better, "5", near)
            assert supersedes(old, new)
            assert not supersedes(new, old)


def test_within_a_method_only_closer_evidence_makes_a_revision() -> None:
    far = _result("M", "actual", "5.000", [Evidence("reading", OCT_END - 50 * _MIN, Decimal(5))])
    close = _result("M", "actual", "5.010", [Evidence("reading", OCT_END + 5 * _MIN, Decimal(5))])
    assert supersedes(far, close)
    assert not supersedes(close, far)
    assert not supersedes(close, close)
    same_distance = _result(
        "M", "actual", "5.010", [Evidence("reading", OCT_END - 5 * _MIN, Decimal(5), ref=7)]
    )
    assert not supersedes(close, same_distance)  # same value: nothing to revise


def test_an_estimate_bounded_by_a_new_reading_is_a_revision() -> None:
    before = _august_to(utc(2026, 10, 27))
    first = compute_monthly("M", OCTOBER, before, now=FAR_FUTURE)
    late = Reading(utc(2026, 11, 5), Decimal("315.000"))
    second = compute_monthly("M", OCTOBER, [*before, late], now=FAR_FUTURE)
    assert first is not None and second is not None
    assert first.method == second.method == "estimated"
    assert supersedes(first, second)
    assert not supersedes(second, second)
    filled = _august_to(utc(2026, 11, 5))
    third = compute_monthly("M", OCTOBER, filled, now=FAR_FUTURE)
    assert third is not None and third.method == "actual"
    assert supersedes(second, third) and not supersedes(third, second)


def test_a_stored_result_reads_back_equal_from_its_json() -> None:
    readings = [*_daily_until_october_10(), manual(utc(2026, 10, 26, 9), "75.500")]
    result = compute_monthly("M", OCTOBER, readings, now=FAR_FUTURE)
    assert result is not None
    stored = json.loads(json.dumps(result.evidence_json()))
    back = MonthlyResult.from_row(
        meter_id=result.meter_id,
        period=result.period,
        boundary=result.boundary,
        value=result.value,
        unit=result.unit,
        method=result.method,
        evidence=stored,
    )
    assert back == result
    assert not supersedes(back, result)


def test_revisions_refuse_mismatched_rows_and_unknown_methods() -> None:
    evidence = [Evidence("reading", OCT_END, Decimal(5))]
    with pytest.raises(ValueError, match="same meter and period"):
        supersedes(_result("A", "actual", "5", evidence), _result("B", "actual", "5", evidence))
    with pytest.raises(ValueError, match="unknown monthly method"):
        _result("A", "guessed", "5", evidence)


# --- bad input ----------------------------------------------------------------------------


def test_naive_instants_are_refused() -> None:
    naive = datetime(2026, 11, 5)
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_monthly("M", OCTOBER, [], now=naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_monthly("M", OCTOBER, [Reading(naive, Decimal(1))], now=FAR_FUTURE)


def test_a_resolution_must_be_a_power_of_ten() -> None:
    with pytest.raises(ValueError, match="power of ten"):
        MonthlyRules(resolution=Decimal("0.005"))


# --- properties ---------------------------------------------------------------------------

_MIN = timedelta(minutes=1)
_litres = st.integers(min_value=0, max_value=10**9)


@settings(max_examples=150, deadline=None)
@given(
    start=_litres,
    rise=st.integers(min_value=0, max_value=10**7),
    exponent=st.sampled_from([-2, -3, -4]),
    before=st.integers(min_value=61, max_value=5040),
    after=st.integers(min_value=61, max_value=5040),
)
def test_an_interpolated_value_lies_between_its_neighbours(
    start: int, rise: int, exponent: int, before: int, after: int
) -> None:
    low = Decimal(start).scaleb(exponent)
    high = Decimal(start + rise).scaleb(exponent)
    readings = [Reading(OCT_END - before * _MIN, low), Reading(OCT_END + after * _MIN, high)]
    result = compute_monthly("M", OCTOBER, readings, now=FAR_FUTURE)
    assert result is not None and result.method == "interpolated"
    assert low <= result.value <= high


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=1, max_value=24 * 20), st.integers(0, 50_000)),
        min_size=2,
        max_size=30,
    )
)
def test_a_monotone_index_gives_monotone_months_and_no_negative_consumption(
    steps: list[tuple[int, int]],
) -> None:
    t, litres = utc(2026, 8, 20), 0
    readings = []
    for hours, used in steps:
        t += hours * HOUR
        litres += used
        readings.append(Reading(t, Decimal(litres).scaleb(-3)))
    months = [date(2026, m, 1) for m in (8, 9, 10, 11, 12)]
    results = [compute_monthly("M", p, readings, now=FAR_FUTURE) for p in months]
    present = [r for r in results if r is not None]
    for earlier, later in itertools.pairwise(present):
        assert later.value >= earlier.value
        between = consumption(earlier, later)
        assert not between.clamped and between.volume == later.value - earlier.value
