"""Verification tracking (DESIGN.md section 7): rules, due dates per country, alerts, billing
flags."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from ingest.alerts import AlertChange, OpenAlert
from ingest.verification import (
    RULES,
    Counting,
    Due,
    VerificationRule,
    find_rule,
    next_due,
    overdue_at,
    verification_changes,
)
from tests.ingest.engine_data import utc


@pytest.mark.parametrize(
    ("country", "medium", "kind", "years"),
    [
        ("LV", "water", None, 4),
        ("LV", "cold water", "mechanical", 4),
        ("LV", "cold water", "ultrasonic", 6),
        ("LV", "warm water", "electromagnetic", 6),
        ("DE", "cold water", "mechanical", 6),
        ("DE", "warm water", None, 6),  # 5 until the MessEV amendment of November 2021
        ("DE", "hot water", "ultrasonic", 6),
        ("PL", "water", "mechanical", 5),
        ("LT", "cold water", None, 6),
        ("ee", "water", "*", 5),
    ],
)
def test_the_rules_table_gives_the_interval(
    country: str, medium: str, kind: str | None, years: int
) -> None:
    rule = find_rule(country, medium, kind)
    assert rule is not None and rule.years == years


def test_no_rule_for_an_unknown_country_or_medium() -> None:
    assert find_rule("FR", "water", None) is None
    assert find_rule("LV", "heat", None) is None


def test_the_most_specific_rule_wins() -> None:
    rules = (
        VerificationRule("XX", "water", "*", 4, "a"),
        VerificationRule("XX", "water", "ultrasonic", 6, "b"),
        VerificationRule("XX", "warm water", "*", 3, "c"),
    )
    assert find_rule("XX", "warm water", "ultrasonic", rules) == rules[2]
    assert find_rule("XX", "cold water", "ultrasonic", rules) == rules[1]
    assert find_rule("XX", "cold water", "mechanical", rules) == rules[0]


def _rule(country: str, medium: str = "water", kind: str | None = None) -> VerificationRule:
    rule = find_rule(country, medium, kind, RULES)
    assert rule is not None
    return rule


@pytest.mark.parametrize(
    ("country", "kind", "known", "due_on", "basis"),
    [
        # MessEV § 34 (2): the interval ends with the end of the year it ends in; a new meter
        # counts from its marking year.
        ("DE", None, (2020, None), date(2027, 1, 1), "marking_year"),
        ("DE", None, (2020, date(2021, 3, 15)), date(2028, 1, 1), "last_verification"),
        # Poland: M20 expires on 1 December 2025; a verification in 2020 counts from 1 January
        # 2021 and expires at the end of 2025.
        ("PL", None, (2020, None), date(2025, 12, 1), "marking_year"),
        ("PL", None, (None, date(2020, 6, 10)), date(2026, 1, 1), "last_verification"),
        # Latvia, Lithuania, Estonia: from the verification date; a marking year counts from its
        # first day (the earliest the interval can end).
        ("LV", "mechanical", (None, date(2022, 5, 10)), date(2026, 5, 10), "last_verification"),
        ("LV", "ultrasonic", (2022, None), date(2028, 1, 1), "marking_year"),
        ("LT", None, (None, date(2020, 2, 29)), date(2026, 2, 28), "last_verification"),
        ("EE", None, (2021, None), date(2026, 1, 1), "marking_year"),
    ],
)
def test_the_due_date_is_counted_as_the_country_counts(
    country: str,
    kind: str | None,
    known: tuple[int | None, date | None],
    due_on: date,
    basis: str,
) -> None:
    marking_year, last_verified = known
    rule = _rule(country, kind=kind)
    due = next_due(rule, marking_year=marking_year, last_verified=last_verified)
    assert (due.due_on, due.basis) == (due_on, basis)
    assert due.to_json()["due_on"] == due_on.isoformat()


def test_a_counting_can_be_given() -> None:
    counting = Counting("year_end", "december", "test")
    assert next_due(_rule("LV"), marking_year=2020, counting=counting).due_on == date(2024, 12, 1)


def test_a_due_date_needs_a_marking_year_or_a_verification() -> None:
    with pytest.raises(ValueError, match="marking year or the last verification"):
        next_due(_rule("LV"))


# --- alerts -------------------------------------------------------------------------------

# Latvian meter verified 1 November 2022: due 1 November 2026, i.e. 2026-10-31 22:00Z (midnight
# EET); the warning starts 90 days earlier, 3 August 2026 00:00 EEST = 2026-08-02 21:00Z.
DUE = next_due(_rule("LV", kind="mechanical"), last_verified=date(2022, 11, 1))
WARN_AT = utc(2026, 8, 2, 21)
DUE_AT = utc(2026, 10, 31, 22)


def _apply(changes: list[AlertChange], alerts: list[OpenAlert]) -> list[OpenAlert]:
    out = list(alerts)
    for change in changes:
        if change.action == "open":
            out.append(OpenAlert(change.kind, change.rule, change.at))
        else:
            out = [a for a in out if a.kind != change.kind]
    return out


def test_nothing_before_the_warning() -> None:
    assert DUE.due_on == date(2026, 11, 1)
    assert verification_changes(DUE, WARN_AT - datetime.resolution, []) == []


def test_a_due_alert_opens_90_days_ahead_and_an_overdue_one_when_it_passes() -> None:
    (warned,) = verification_changes(DUE, WARN_AT, [])
    assert (warned.action, warned.kind, warned.rule, warned.at) == (
        "open",
        "verification_due",
        "verification",
        WARN_AT,
    )
    assert warned.evidence["due_on"] == "2026-11-01"
    assert warned.evidence["interval_years"] == 4
    alerts = _apply([warned], [])
    assert verification_changes(DUE, utc(2026, 9, 1), alerts) == []

    late = verification_changes(DUE, utc(2026, 11, 3), alerts)
    assert [(c.action, c.kind, c.at) for c in late] == [
        ("close", "verification_due", DUE_AT),
        ("open", "verification_overdue", DUE_AT),
    ]
    alerts = _apply(late, alerts)
    assert verification_changes(DUE, utc(2026, 12, 1), alerts) == []

    # Verified again: the new due date is years away, the overdue alert closes now.
    renewed = next_due(_rule("LV", kind="mechanical"), last_verified=date(2026, 11, 20))
    now = utc(2026, 11, 21)
    assert [(c.action, c.kind, c.at) for c in verification_changes(renewed, now, alerts)] == [
        ("close", "verification_overdue", now)
    ]


def test_a_meter_found_overdue_late_opens_its_overdue_alert_at_the_due_instant() -> None:
    changes = verification_changes(DUE, utc(2027, 3, 1), [])
    assert [(c.action, c.kind, c.at) for c in changes] == [("open", "verification_overdue", DUE_AT)]


def test_without_a_due_date_open_verification_alerts_close() -> None:
    alerts = [
        OpenAlert("verification_due", "verification", WARN_AT),
        OpenAlert("leak", "x", WARN_AT),
    ]
    changes = verification_changes(None, utc(2026, 9, 1), alerts)
    assert [(c.action, c.kind) for c in changes] == [("close", "verification_due")]


def test_readings_of_an_overdue_meter_are_flagged_from_local_midnight() -> None:
    assert not overdue_at(DUE.due_on, DUE_AT - datetime.resolution)
    assert overdue_at(DUE.due_on, DUE_AT)
    assert not overdue_at(None, DUE_AT)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        overdue_at(DUE.due_on, datetime(2026, 11, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        verification_changes(DUE, datetime(2026, 11, 1), [])


def test_a_due_knows_its_rule_and_counting() -> None:
    due = next_due(_rule("DE"), marking_year=2020)
    assert isinstance(due, Due)
    assert due.to_json() == {
        "due_on": "2027-01-01",
        "interval_years": 6,
        "basis": "marking_year",
        "source": "DE MessEV Anlage 7 (Kaltwasserzaehler)",
        "counting": "DE MessEV § 34 Abs. 1-2, MessEG § 37 Abs. 1",
    }
