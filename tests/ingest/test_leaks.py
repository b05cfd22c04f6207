"""Leaks and alarms (DESIGN.md section 6): meter flags, night flow (DST nights included),
continuous flow, thresholds per meter class."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.alerts import AlertChange, OpenAlert
from ingest.boundaries import night_window
from ingest.flow import (
    DEFAULT_THRESHOLDS,
    THRESHOLDS,
    FlowThresholds,
    NightLow,
    hourly_flows,
    night_lows,
    nights_covered,
    thresholds_for,
)
from ingest.leaks import continuous_flow_changes, flag_changes, night_flow_changes
from ingest.series import Reading
from tests.ingest.engine_data import series, utc

RIGA = ZoneInfo("Europe/Riga")
HOUR = timedelta(hours=1)
T1 = utc(2026, 10, 10, 8)


def applied(changes: list[AlertChange], alerts: list[OpenAlert]) -> list[OpenAlert]:
    """What the storage side does with the changes: the open alerts afterwards."""
    out = list(alerts)
    for change in changes:
        if change.action == "open":
            out.append(OpenAlert(change.kind, change.rule, change.at))
        else:
            out = [a for a in out if (a.kind, a.rule) != (change.kind, change.rule)]
    return out


# --- meter flags --------------------------------------------------------------------------


def test_a_flag_opens_its_alert_and_a_later_telegram_without_it_closes_it() -> None:
    opened = flag_changes(["leak", "low_battery"], T1, [], status_raw=0x24)
    assert [(c.action, c.kind, c.rule, c.at) for c in opened] == [
        ("open", "leak", "flag:leak", T1),
        ("open", "low_battery", "flag:low_battery", T1),
    ]
    assert opened[0].evidence == {
        "rule": "flag:leak",
        "flags": ["leak", "low_battery"],
        "status_raw": 0x24,
    }
    alerts = applied(opened, [])
    assert flag_changes(["low_battery", "leak"], T1 + HOUR, alerts) == []
    closed = flag_changes(["low_battery"], T1 + 2 * HOUR, alerts)
    assert [(c.action, c.kind, c.at) for c in closed] == [("close", "leak", T1 + 2 * HOUR)]


@pytest.mark.parametrize(
    ("flag", "kind"),
    [
        ("burst", "burst"),
        ("backflow", "backflow"),
        ("reverse", "backflow"),
        ("dry", "dry"),
        ("tamper", "tamper"),
    ],
)
def test_flags_map_to_the_alert_kinds(flag: str, kind: str) -> None:
    (change,) = flag_changes([flag], T1, [])
    assert (change.kind, change.rule) == (kind, f"flag:{flag}")


def test_flags_about_the_past_and_device_errors_open_nothing() -> None:
    assert flag_changes(["leak_before", "permanent_error", "busy"], T1, []) == []


def test_a_stale_telegram_changes_nothing() -> None:
    alerts = [OpenAlert("leak", "flag:leak", T1)]
    assert flag_changes([], T1 - HOUR, alerts, last_status_at=T1) == []
    assert flag_changes([], T1, alerts, last_status_at=T1) == []
    # Without the last status time, a telegram older than the alert still cannot close it.
    assert flag_changes([], T1 - HOUR, alerts) == []


def test_flags_leave_alerts_of_other_rules_alone() -> None:
    alerts = [OpenAlert("leak", "continuous_flow", T1), OpenAlert("night_flow", "night_flow", T1)]
    assert flag_changes([], T1 + HOUR, alerts) == []


# --- night flow ---------------------------------------------------------------------------


def local_hour(t: datetime) -> int:
    return t.astimezone(RIGA).hour


def leaking(night_lph: int, day_lph: int = 20) -> Callable[[datetime], int]:
    return lambda t: night_lph if 2 <= local_hour(t) < 5 else day_lph


def nightly(
    readings: list[Reading], thresholds: FlowThresholds = DEFAULT_THRESHOLDS
) -> list[NightLow]:
    flows = hourly_flows(readings, thresholds)
    return night_lows(flows, nights_covered(readings, thresholds, RIGA), thresholds, RIGA)


def test_three_nights_above_the_threshold_open_a_night_flow_alert() -> None:
    # 3 l/h between 02:00 and 05:00 local from the night of 6 October on, 20 l/h otherwise.
    readings = series(utc(2026, 10, 5, 12), utc(2026, 10, 8, 12), HOUR, leaking(3))
    lows = nightly(readings)
    assert [n.night for n in lows] == [date(2026, 10, 6), date(2026, 10, 7), date(2026, 10, 8)]
    assert all(n.low is not None and n.low.litres_per_hour == Decimal(3) for n in lows)
    (change,) = night_flow_changes(lows, [], DEFAULT_THRESHOLDS)
    assert (change.action, change.kind, change.rule) == ("open", "night_flow", "night_flow")
    assert change.at == utc(2026, 10, 8, 2)  # 05:00 EEST, the end of the third night
    assert change.evidence["threshold_lph"] == "2"
    assert [n["night"] for n in change.evidence["nights"]] == [
        "2026-10-06",
        "2026-10-07",
        "2026-10-08",
    ]
    assert change.evidence["nights"][0]["lowest_hour"]["litres_per_hour"] == "3.000"
    # Scanning again with the alert open changes nothing.
    assert night_flow_changes(lows, applied([change], []), DEFAULT_THRESHOLDS) == []


def test_two_nights_or_a_flow_at_the_threshold_open_nothing() -> None:
    two = series(utc(2026, 10, 5, 12), utc(2026, 10, 7, 12), HOUR, leaking(3))
    assert night_flow_changes(nightly(two), [], DEFAULT_THRESHOLDS) == []
    at_threshold = series(utc(2026, 10, 5, 12), utc(2026, 10, 9, 12), HOUR, leaking(2))
    assert night_flow_changes(nightly(at_threshold), [], DEFAULT_THRESHOLDS) == []


def test_a_quiet_night_closes_the_alert_and_a_rescan_does_not_reopen_it() -> None:
    def flow(t: datetime) -> int:
        quiet = t.astimezone(RIGA).date() == date(2026, 10, 9)
        return leaking(0 if quiet else 3)(t)

    readings = series(utc(2026, 10, 5, 12), utc(2026, 10, 9, 12), HOUR, flow)
    lows = nightly(readings)
    changes = night_flow_changes(lows, [], DEFAULT_THRESHOLDS)
    assert [(c.action, c.at) for c in changes] == [
        ("open", utc(2026, 10, 8, 2)),
        ("close", utc(2026, 10, 9, 2)),
    ]
    assert changes[1].evidence["quiet_night"]["night"] == "2026-10-09"
    assert night_flow_changes(lows, [], DEFAULT_THRESHOLDS, since=utc(2026, 10, 9, 2)) == []


def test_a_night_without_data_breaks_the_run_but_closes_nothing() -> None:
    readings = series(utc(2026, 10, 5, 12), utc(2026, 10, 9, 12), HOUR, leaking(3))
    gap = [r for r in readings if r.measured_at.astimezone(RIGA).date() != date(2026, 10, 7)]
    lows = nightly(gap)
    assert [n.low is None for n in lows] == [False, True, False, False]
    assert night_flow_changes(lows, [], DEFAULT_THRESHOLDS) == []
    open_alert = [OpenAlert("night_flow", "night_flow", utc(2026, 10, 1))]
    assert night_flow_changes(lows, open_alert, DEFAULT_THRESHOLDS) == []


def test_the_night_windows_of_the_dst_sundays() -> None:
    start, end = time(2), time(5)
    assert night_window(date(2026, 3, 28), start, end, RIGA) == (
        utc(2026, 3, 28),
        utc(2026, 3, 28, 3),
    )
    assert night_window(date(2026, 3, 29), start, end, RIGA) == (
        utc(2026, 3, 29),
        utc(2026, 3, 29, 2),
    )
    assert night_window(date(2026, 10, 25), start, end, RIGA) == (
        utc(2026, 10, 24, 23),
        utc(2026, 10, 25, 3),
    )
    # A window over midnight starts the evening before.
    assert night_window(date(2026, 10, 25), time(23), end, RIGA) == (
        utc(2026, 10, 24, 20),
        utc(2026, 10, 25, 3),
    )


def test_the_spring_dst_night_is_two_hours_long() -> None:
    # 29 March 2026: 02:00 EET is 00:00Z, 05:00 EEST is 02:00Z. The hour 02:00-03:00Z (05:00-06:00
    # local) has no flow, but it is after the window: the night still counts as leaking.
    def flow(t: datetime) -> int:
        return 0 if t == utc(2026, 3, 29, 2) else leaking(3)(t)

    readings = series(utc(2026, 3, 27, 12), utc(2026, 3, 30, 12), HOUR, flow)
    lows = nightly(readings)
    spring = next(n for n in lows if n.night == date(2026, 3, 29))
    assert spring.low is not None and spring.low.litres_per_hour == Decimal(3)
    assert (spring.low.start, spring.low.end) in [
        (utc(2026, 3, 29, 0), utc(2026, 3, 29, 1)),
        (utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)),
    ]
    (change,) = night_flow_changes(lows, [], DEFAULT_THRESHOLDS)
    assert change.at == utc(2026, 3, 30, 2)


def test_the_autumn_dst_night_is_four_hours_long() -> None:
    # 25 October 2026: 02:00 EEST is 23:00Z, 05:00 EET is 03:00Z. The fourth hour 02:00-03:00Z
    # (04:00-05:00 EET, after the clocks went back) has no flow: the night is quiet.
    def flow(t: datetime) -> int:
        return 0 if t == utc(2026, 10, 25, 2) else leaking(3)(t)

    readings = series(utc(2026, 10, 22, 12), utc(2026, 10, 26, 12), HOUR, flow)
    lows = nightly(readings)
    autumn = next(n for n in lows if n.night == date(2026, 10, 25))
    assert autumn.low is not None and autumn.low.litres_per_hour == Decimal(0)
    assert autumn.low.start == utc(2026, 10, 25, 2)
    assert night_flow_changes(lows, [], DEFAULT_THRESHOLDS) == []


def test_readings_every_two_hours_are_not_frequent_enough() -> None:
    readings = series(utc(2026, 10, 5, 12), utc(2026, 10, 9, 12), 2 * HOUR, leaking(3))
    assert hourly_flows(readings, DEFAULT_THRESHOLDS) == []
    lows = nightly(readings)
    assert lows and all(n.low is None for n in lows)
    assert night_flow_changes(lows, [], DEFAULT_THRESHOLDS) == []


def test_readings_every_15_minutes_give_sliding_hours() -> None:
    readings = series(utc(2026, 10, 5, 12), utc(2026, 10, 8, 12), timedelta(minutes=15), leaking(3))
    flows = hourly_flows(readings, DEFAULT_THRESHOLDS)
    assert all(f.end - f.start == HOUR for f in flows)
    assert flows[1].start - flows[0].start == timedelta(minutes=15)
    lows = nightly(readings)
    assert [n.low.litres_per_hour for n in lows if n.low] == [Decimal(3)] * 3
    assert len(night_flow_changes(lows, [], DEFAULT_THRESHOLDS)) == 1


def test_manual_and_marked_readings_and_restarts_give_no_flow() -> None:
    readings = [
        Reading(T1, Decimal("5.000")),
        Reading(T1 + HOUR, Decimal("5.010"), source="manual"),
        Reading(T1 + HOUR, Decimal("9.000"), implausible=True),
        Reading(T1 + 2 * HOUR, Decimal("0.001")),
        Reading(T1 + 3 * HOUR, Decimal("0.004")),
    ]
    flows = hourly_flows(readings, DEFAULT_THRESHOLDS)
    assert [(f.start, f.litres_per_hour) for f in flows] == [(T1 + 2 * HOUR, Decimal(3))]


# --- continuous flow ----------------------------------------------------------------------


def test_flow_in_every_hour_of_a_day_opens_a_leak_and_a_dry_hour_closes_it() -> None:
    start = utc(2026, 10, 10)

    def flow(t: datetime) -> int:
        return 0 if t == start + 30 * HOUR else 5

    flows = hourly_flows(series(start, start + 36 * HOUR, HOUR, flow), DEFAULT_THRESHOLDS)
    changes = continuous_flow_changes(flows, [], DEFAULT_THRESHOLDS)
    assert [(c.action, c.kind, c.rule, c.at) for c in changes] == [
        ("open", "leak", "continuous_flow", start + 24 * HOUR),
        ("close", "leak", "continuous_flow", start + 31 * HOUR),
    ]
    assert changes[0].evidence["flowing_since"] == start.isoformat()
    assert changes[0].evidence["lowest_hour"]["litres_per_hour"] == "5.000"
    assert continuous_flow_changes(flows, [], DEFAULT_THRESHOLDS, since=changes[1].at) == []


def test_a_gap_in_the_readings_is_not_a_day_of_flow() -> None:
    start = utc(2026, 10, 10)
    readings = [
        r
        for r in series(start, start + 30 * HOUR, HOUR, 5)
        if not start + 10 * HOUR < r.measured_at < start + 13 * HOUR
    ]
    flows = hourly_flows(readings, DEFAULT_THRESHOLDS)
    assert continuous_flow_changes(flows, [], DEFAULT_THRESHOLDS) == []


def test_a_building_class_has_a_higher_night_threshold_and_no_continuous_rule() -> None:
    building = thresholds_for("building")
    readings = series(utc(2026, 10, 5, 12), utc(2026, 10, 9, 12), HOUR, leaking(10, 50))
    flows = hourly_flows(readings, building)
    assert continuous_flow_changes(flows, [], building) == []
    assert night_flow_changes(nightly(readings, building), [], building) == []
    assert len(night_flow_changes(nightly(readings), [], DEFAULT_THRESHOLDS)) == 1


def test_thresholds_are_looked_up_by_class_with_a_default() -> None:
    assert thresholds_for(None) is DEFAULT_THRESHOLDS
    assert thresholds_for("no such class") is DEFAULT_THRESHOLDS
    assert thresholds_for("building") is THRESHOLDS["building"]
    custom = FlowThresholds(night_lph=Decimal(5))
    assert thresholds_for("x", {"default": custom}) is custom
    assert thresholds_for("x", {}) is DEFAULT_THRESHOLDS


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nights": 0},
        {"continuous_hours": 0},
        {"hour_min": timedelta(0)},
        {"hour_min": timedelta(hours=2), "hour_max": HOUR},
    ],
)
def test_bad_thresholds_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FlowThresholds(**kwargs)  # type: ignore[arg-type]


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=60, max_value=5400), st.integers(0, 5000)),
        min_size=2,
        max_size=80,
    )
)
def test_hourly_flows_are_hours_and_the_night_low_is_the_lowest(
    steps: list[tuple[int, int]],
) -> None:
    t, litres, readings = utc(2026, 10, 24, 18), 0, []
    for seconds, used in steps:
        t += timedelta(seconds=seconds)
        litres += used
        readings.append(Reading(t, Decimal(litres).scaleb(-3)))
    thresholds = DEFAULT_THRESHOLDS
    flows = hourly_flows(readings, thresholds)
    for flow in flows:
        assert thresholds.hour_min <= flow.end - flow.start <= thresholds.hour_max
        assert flow.litres >= 0
    slack = thresholds.edge_slack
    for night in night_lows(flows, nights_covered(readings, thresholds, RIGA), thresholds, RIGA):
        inside = [f for f in flows if f.start >= night.start - slack and f.end <= night.end + slack]
        if night.low is None:
            assert inside == []
        else:
            assert all(not f.below(night.low) for f in inside)
